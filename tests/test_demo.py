"""The demo end to end on a tiny sample: BDT report, then the CNN evaluated beside the BDT."""

from __future__ import annotations

import json

import pytest

from fastreco.demo import run_demo

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:lightning.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
]


def test_demo_writes_both_reports_on_the_same_test_events(tmp_path):
    report = run_demo(tmp_path, n_events=1000, workers=1, progress=False, cnn_epochs=1)
    assert report.exists()
    cnn = json.loads((tmp_path / "cnn" / "metrics.json").read_text())
    assert set(cnn["classifiers"]) == {"CNN (cells)", "BDT (shower shapes)"}
    for clf in cnn["classifiers"].values():
        assert 0.5 < clf["auc"] <= 1.0
    assert (tmp_path / "cnn" / "report.html").stat().st_size > 10_000
