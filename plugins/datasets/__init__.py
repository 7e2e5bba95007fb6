"""Built-in data sets: one module per source format; ``pooled`` is the helper that federates a pooled data set."""
