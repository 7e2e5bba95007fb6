"""What a results file holds and how it is shown: the SQLite store, tables, exports, plots and the HTML
report.

(Named ``reporting``, not ``results``: ``fedbench.results`` is the Python API's function.)"""
