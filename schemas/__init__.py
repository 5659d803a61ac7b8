"""Arrow schemas and config schemas shared between stages."""
