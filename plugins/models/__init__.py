"""Built-in models (``networks``)."""
