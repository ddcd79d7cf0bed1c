"""Use-cases of the server. Only these functions commit; routes call them and translate
their typed errors (services.errors) to HTTP."""
