"""From names to results: run configuration, suites, building a run, the round loop that executes and
stores it, the executors (worker processes, Ray), the data cache and the code fingerprint behind run ids.

(Named ``runs``, not ``run``: ``fedbench.run`` is the Python API's function.)"""
