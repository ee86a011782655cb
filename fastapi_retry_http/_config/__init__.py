"""
Configuration: `ClientSettings` (one client, validated by pydantic) and
`HttpClientsSettings` (the app's pydantic-settings model). The core never imports this
package: `ClientSettings` builds a `Client` through `client_kwargs()`, not the reverse.
"""
