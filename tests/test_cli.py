"""The command line: user errors exit 2 with a message naming the field, and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastreco.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--particle", "kaon"], "valid names are gamma"),
        (["--energy", "0"], "field 'energy'"),
        (["--energy", "10:2"], "low < high"),
        (["--eta-max", "1.7"], "field 'eta_max'"),
    ],
)
def test_bad_simulation_input(tmp_path, args, message):
    result = _run("simulate", "ecal", "--out", str(tmp_path / "x"), "--events", "10", *args)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_simulate_then_read(tmp_path):
    result = _run(
        "simulate",
        "ecal",
        "--out",
        str(tmp_path / "d"),
        "--events",
        "40",
        "--particle",
        "gamma",
        "--energy",
        "10",
    )
    assert result.returncode == 0, result.stderr
    from fastreco.data.store import EventStore

    store = EventStore(tmp_path / "d")
    assert store.n_events == 40
    assert set(store.read().primaries()["pdg"]) == {22}


def test_missing_store_is_a_user_error(tmp_path):
    result = _run("reco", str(tmp_path / "missing"), "-o", str(tmp_path / "r.parquet"))
    assert result.returncode == 2
    assert "no such file or directory" in result.stderr


def test_independent_test_sample_is_refused_for_other_run_kinds(tmp_path):
    import json

    from fastreco.train.runner import RUN_SCHEMA_VERSION

    (tmp_path / "run.json").write_text(
        json.dumps({"run_schema_version": RUN_SCHEMA_VERSION, "kind": "pixel_id"})
    )
    result = _run("evaluate", str(tmp_path), "--test-events", "100")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "regression runs only" in message
    assert "--test-events" in message
