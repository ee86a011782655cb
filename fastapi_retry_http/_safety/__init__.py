"""
The guards that keep a request from doing harm: paths that cannot leave the base URL,
headers that cannot split a request, redirects that do not carry credentials away, a size
cap on response bodies, and URLs written to logs without their secrets.
"""
