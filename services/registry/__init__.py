"""The household registry: households (with versions and history), padron imports, compliance per period."""
