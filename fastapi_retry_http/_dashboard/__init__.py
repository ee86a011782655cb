"""The operators' dashboard internals: the attempt log, the JSON snapshot, the page."""
