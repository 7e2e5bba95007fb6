"""Built-in partitioners (``label_skew``: iid, Dirichlet, pathological shards and the FedEM authors' splits)."""
