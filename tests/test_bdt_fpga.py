"""conifer export of the BDT: the conversion of scikit-learn's trees is exact in floating point,
and the compiled fixed-point emulation agrees with ``decision_function`` within the precision
(two small projects compiled with g++, ~15-20 s each on a loaded 2-core machine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastreco.deploy import bdt_fpga as F
from fastreco.deploy.registry import EXPORTERS
from fastreco.errors import FastrecoError, InputError
from fastreco.train import baseline as B

conifer = pytest.importorskip("conifer")
pytest.importorskip("hls4ml")  # ships the ap_fixed headers the emulation compiles with

FEATURES = ["s1_s9", "r9", "s4_s25"]

#: At ap_fixed<18,8> a step is 2^-10: inputs and thresholds truncate by less than a step, so an
#: event leaves the float model's path only within a step above a threshold (rare), and each of
#: the 12 leaf values and the baseline truncates by < 2^-10, i.e. a sum off by < 13 * 2^-10 =
#: 0.013 on the events that follow the same paths (measured: 0.0084 on these seeded events).
#: 0.02 bounds that with margin; a path change would move a score by a leaf-value difference
#: (~0.1-0.3) and fail the check.
ATOL_18_8 = 0.02


@pytest.fixture(scope="module")
def bdt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline folder: a 12-tree BDT on 3 features of ~500 seeded events."""
    from test_baseline import synthetic_reco

    out = tmp_path_factory.mktemp("bdt")
    reco = synthetic_reco(700, seed=5)
    config = B.BDTConfig(max_iter=12, max_leaf_nodes=6, early_stopping=False)
    B.train_baseline(reco, out, seed=2, features=FEATURES, bdt_config=config, write_report=False)
    return out


def test_conversion_is_exact_in_float(bdt_dir: Path) -> None:
    bdt, x, _ = F.load_bdt_dir(bdt_dir)
    ensemble = F.ensemble_dict(bdt.model, bdt.features)
    assert ensemble["n_trees"] == 12
    assert list(ensemble["feature_map"]) == FEATURES
    for (tree,) in ensemble["trees"]:
        parents = [i for i, c in enumerate(tree["children_left"]) if c != -1]
        for i in parents:  # parents precede their children, as the firmware needs
            assert tree["children_left"][i] > i
            assert tree["children_right"][i] > i
    assert F.float_check(bdt.model, ensemble, x) < 1e-12


def test_bad_inputs() -> None:
    for bad in ("ap_fixed<8>", "float", "ap_fixed<8,1>", "ap_fixed<8,8>", "ap_int<8>"):
        with pytest.raises(InputError, match="precision"):
            F.parse_precision(bad)
    assert F.parse_precision("ap_fixed<18,8,AP_RND,AP_SAT>") == (18, 8)
    with pytest.raises(InputError, match="HistGradientBoostingClassifier"):
        F.ensemble_dict(object())
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    three = HistGradientBoostingClassifier(max_iter=2).fit(
        rng.normal(size=(90, 2)), np.arange(90) % 3
    )
    with pytest.raises(InputError, match="two-class"):
        F.ensemble_dict(three)


def test_quantize_fixed() -> None:
    np.testing.assert_array_equal(
        F.quantize_fixed([0.3, -0.3, 7.9, 8.0, -9.0], "ap_fixed<6,4>"),  # step 0.25, [-8, 8)
        [0.25, -0.5, 7.75, -8.0, 7.0],  # truncation towards -inf, wrap-around
    )
    np.testing.assert_array_equal(
        F.quantize_fixed([0.3, -0.3, 8.0, -9.0], "ap_fixed<6,4,AP_RND,AP_SAT>"),
        [0.25, -0.25, 7.75, -8.0],
    )


def test_quick_scan_needs_no_compiler(bdt_dir: Path) -> None:
    rows = F.scan_precisions(bdt_dir, ["ap_fixed<24,8>", "ap_fixed<5,4>"])
    assert rows[0]["max_abs_diff"] < 13 * 2.0**-16  # 12 leaves + the baseline, each truncated
    assert rows[0]["same_decision"] == 1.0
    assert rows[1]["same_decision"] < rows[0]["same_decision"]


def test_not_a_bdt_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a BDT folder"):
        F.export_bdt_fpga(tmp_path, tmp_path / "out")
    assert "conifer" in EXPORTERS


@pytest.mark.skipif(shutil.which("g++") is None, reason="the emulation compiles with g++")
def test_export_writes_the_project_and_agrees(bdt_dir: Path, tmp_path: Path) -> None:
    out = F.export_bdt_fpga(bdt_dir, tmp_path / "p18", precision="ap_fixed<18,8>")
    good = json.loads((out / F.AGREEMENT_FILE).read_text())
    meta = json.loads((out / F.METADATA_FILE).read_text())
    assert (out / "firmware" / "parameters.h").is_file()
    assert (out / "build_hls.tcl").is_file()
    assert "synth  1" in (out / "build_opt.tcl").read_text()
    assert meta["synthesis_command"] == F.synthesis_command(out)
    assert meta["features"] == FEATURES
    assert good["n"] > 100
    assert good["float_check"] < 1e-12
    assert good["max_abs_diff"] < ATOL_18_8
    assert good["same_decision"] > 0.99
    assert abs(good["auc_emulation"] - good["auc_float"]) < 0.005
    assert good["n_missing"] == 0
    assert good["n_out_of_range"] == 0


@pytest.mark.skipif(shutil.which("g++") is None, reason="the emulation compiles with g++")
def test_narrow_type_degrades_and_missing_features_go_left(bdt_dir: Path, tmp_path: Path) -> None:
    bdt, x, y = F.load_bdt_dir(bdt_dir)
    # 4 integer bits: s1_s9 ~ 0.8 fits, but one fractional bit rounds every threshold and
    # input to a multiple of 0.5 and every leaf value to 0 or +-0.5
    model = F.convert_bdt(bdt, tmp_path / "p", precision="ap_fixed<5,4>")
    assert model.fastreco_input_range == (-8.0, 8.0)
    bad = F.bdt_agreement(
        bdt.model.decision_function(x), F.emulate(model, x), y, x=x, input_range=(-8.0, 8.0)
    )
    assert bad["max_abs_diff"] > 0.2  # > 10 x ATOL_18_8
    assert bad["same_decision"] < 0.97
    assert bad["auc_emulation"] < bad["auc_float"] - 0.02
    # the Python model of the firmware's arithmetic is the compiled emulation, bit for bit
    ensemble = F.ensemble_dict(bdt.model, bdt.features)
    np.testing.assert_array_equal(
        F.predict_quantized(ensemble, x, "ap_fixed<5,4>"), F.emulate(model, x)
    )

    # a NaN or infinite feature is fed as the type's lowest value, -8
    probe = np.array([[np.nan, 1.0, 0.0], [-8.0, 1.0, 0.0], [np.inf, 1.0, 0.0]])
    scores = F.emulate(model, probe)
    assert scores[0] == scores[1] == scores[2]
    counted = F.bdt_agreement(scores, scores, x=probe, input_range=(-8.0, 8.0))
    assert counted["n_missing"] == 2
    assert counted["n_out_of_range"] == 0
    with pytest.raises(InputError, match="shape"):
        F.emulate(model, np.zeros((2, 2)))


def test_missing_headers_are_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    for var in ("XILINX_AP_INCLUDE", "XILINX_HLS", "XILINX_VIVADO"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FastrecoError, match="ap_fixed headers"):
        F.ap_types_include()
