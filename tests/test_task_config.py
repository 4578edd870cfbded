"""Task configs: the shipped YAMLs load, bad fields are named, splits are deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastreco.config import TaskConfig
from fastreco.data.representations import REPRESENTATIONS
from fastreco.data.splits import split_codes
from fastreco.errors import InputError
from fastreco.models import MODELS, build_model

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("ecal_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_resolve(path):
    task = TaskConfig.load(path)
    assert task.name == path.stem
    rep = REPRESENTATIONS.resolve(task.representation.name)
    build_model(task.model.name, rep.input_shape(task.representation), 2, **task.model.params)
    assert TaskConfig.from_dict(task.to_dict()) == task


def test_all_four_tasks_are_shipped():
    assert {p.stem for p in CONFIGS} >= {
        "ecal_gamma_pi0_8gev",
        "ecal_gamma_pi0",
        "ecal_pid",
        "ecal_energy",
    }


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"name": "x", "modle": {}}, r"field 'modle'.*valid fields are"),
        ({"name": "x", "kind": "clustering"}, r"field 'kind'.*classification, regression"),
        ({"name": "x", "training": {"epochs": "many"}}, r"field 'training\.epochs'.*'many'"),
        ({"name": "x", "data": {"events": 1.5}}, r"field 'data\.events'.*integer"),
        ({"name": "x", "training": {"augment": "yes"}}, r"field 'training\.augment'"),
    ],
)
def test_bad_fields_are_named(raw, match):
    with pytest.raises(InputError, match=match):
        TaskConfig.from_dict(raw, source="cfg.yaml")


def test_unknown_model_lists_the_choices():
    with pytest.raises(InputError, match=r"model\.name.*among choices.*tmva-cnn"):
        build_model("transformer", (1, 5, 5), 1)
    assert "resnet-cnn" in MODELS


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="no such config file"):
        TaskConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(InputError, match=r"bad\.yaml.*not valid YAML"):
        TaskConfig.load(bad)


def test_splits_are_deterministic_and_balanced():
    events = np.arange(200_000)
    codes = split_codes(events, (0.6, 0.2, 0.2))
    np.testing.assert_array_equal(codes, split_codes(events[::-1], (0.6, 0.2, 0.2))[::-1])
    fractions = np.bincount(codes) / len(events)
    np.testing.assert_allclose(fractions, [0.6, 0.2, 0.2], atol=0.005)
    # neighbouring events are spread over the splits
    assert len(set(codes[:20].tolist())) == 3
