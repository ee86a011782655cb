"""
The FastAPI integration: `clients_lifespan` builds and closes the clients, the registry keeps
them by name, `get_client` hands them to routes.
"""
