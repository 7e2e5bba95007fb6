"""fedbench's built-in plugins, installed as the ``fedbench_plugins`` package.

Each module registers itself through the same hooks a third-party plugin uses,
via the ``[project.entry-points.fedbench]`` table of fedbench's pyproject. By kind:
``methods/`` (one module per method: its client types, aggregators and the method
pairing them; ``methods/partial.py`` is a helper FedRep and FedBN share),
``datasets/`` (one module per on-disk format, ``datasets/pooled.py`` federates a
pooled data set), ``models/``, ``partitioners/`` and ``suites/`` (the suite files).
The plain client, the centralised aggregator and the executors are registered by
the core itself (``fedbench.plugin.components``), through the same hooks.
"""
