"""The plugin's own conformance test: fedbench's check_method runs FedMedian through both engines, twice
under one seed, with half the clients, with unseen clients and into a results file (pytest, once installed)."""

from fedbench.testing import check_method


def test_fedmedian_conforms():
    report = check_method("fedmedian")
    assert {"determinism", "both backends", "partial participation", "stored run"} <= set(report.passed)
