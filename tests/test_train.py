"""Training runs: checkpoints, resume after a kill, transfer learning, NaN losses, config errors,
distributed data parallel on CPU."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastreco.config import TaskConfig
from fastreco.errors import InputError
from fastreco.sim.engine import simulate
from fastreco.train.module import NonFiniteLossError, TaskModule
from fastreco.train.runner import load_run, sim_config, train_task

pytestmark = [
    # Lightning's advice for tiny CPU runs (few workers, few batches, mid-epoch resume) and a
    # deprecation inside torch's pytree: not ours to fix.
    pytest.mark.filterwarnings("ignore::UserWarning:lightning.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
]

#: 15 chunks of 107 events (batch 64 / train fraction 0.6), ~64 training events each: every
#: chunk keeps more than one event of each split, as BatchNorm needs.
N_EVENTS = 1605
STEPS_PER_EPOCH = 15


def tiny_task(data_dir: Path, **overrides: object) -> TaskConfig:
    raw: dict = {
        "name": "tiny",
        "data": {
            "dir": str(data_dir),
            "events": N_EVENTS,
            "energy": "8",
            "events_per_shard": N_EVENTS,
            "seed": 5,
        },
        "representation": {"name": "window", "size": 11},
        "model": {"name": "tmva-cnn"},
        "training": {"epochs": 1, "batch_size": 64, "num_workers": 0, "patience": 5},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw[section], field: value}
        else:
            raw[section] = value
    return TaskConfig.from_dict(raw)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "store"
    simulate(sim_config(tiny_task(out)), out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    return train_task(tiny_task(data_dir), runs_dir=runs, run_name="base", progress=False)


def test_training_writes_a_run_folder(trained):
    for name in ("config.yaml", "run.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (trained / name).exists(), name
    task, info = load_run(trained)
    assert task.model.name == "tmva-cnn"
    assert info["input_shape"] == [1, 11, 11]
    assert info["global_steps"] == STEPS_PER_EPOCH
    assert math.isfinite(info["best_val_loss"])


class SimulatedKill(Exception):
    pass


def test_resume_continues_a_run_killed_mid_epoch(data_dir, tmp_path, monkeypatch):
    task = tiny_task(data_dir, training__epochs=3)
    kill_at = STEPS_PER_EPOCH + 10  # mid second epoch, after last.ckpt of step 20
    original = TaskModule.training_step

    def dying_step(self, batch, batch_idx):
        if self.global_step == kill_at:
            raise SimulatedKill
        return original(self, batch, batch_idx)

    monkeypatch.setattr(TaskModule, "training_step", dying_step)
    with pytest.raises(SimulatedKill):
        train_task(task, runs_dir=tmp_path, run_name="r", progress=False)
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 20
    assert ckpt["epoch"] == 1  # saved mid-epoch

    steps: list[int] = []

    def counting_step(self, batch, batch_idx):
        steps.append(self.global_step)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(TaskModule, "training_step", counting_step)
    with pytest.raises(InputError, match="--resume"):
        train_task(task, runs_dir=tmp_path, run_name="r", progress=False)
    run = train_task(task, runs_dir=tmp_path, run_name="r", resume=True, progress=False)
    assert steps[0] == ckpt["global_step"]  # continued, not restarted
    _, info = load_run(run)
    assert info["global_steps"] == 3 * STEPS_PER_EPOCH > ckpt["global_step"]
    assert info["epochs_trained"] == 3
    assert len(steps) == 3 * STEPS_PER_EPOCH - ckpt["global_step"]  # only the missing steps


def test_resume_needs_a_checkpoint(data_dir, tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        train_task(tiny_task(data_dir), runs_dir=tmp_path, run_name="x", resume=True)


def test_init_from_loads_the_weights(data_dir, trained, tmp_path, monkeypatch):
    seen: list[dict[str, torch.Tensor]] = []

    def snapshot(self):
        seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(TaskModule, "on_train_start", snapshot)
    run = train_task(
        tiny_task(data_dir), runs_dir=tmp_path, run_name="t", init_from=trained, progress=False
    )
    source = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    assert set(seen[0]) == set(source)
    for key, value in source.items():
        assert torch.equal(seen[0][key], value), key
    _, info = load_run(run)
    n = len(source)
    assert info["init_tensors"] == f"{n}/{n}"


def test_non_finite_loss_names_the_batch_and_keeps_checkpoints(data_dir, tmp_path, monkeypatch):
    original = TaskModule.loss

    def poisoned(self, out, y, energy=None):
        loss = original(self, out, y, energy)
        if self.training and self.global_step >= STEPS_PER_EPOCH + 7:
            return loss * float("nan")
        return loss

    monkeypatch.setattr(TaskModule, "loss", poisoned)
    task = tiny_task(data_dir, training__epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite train loss.*epoch 1, batch 7"):
        train_task(task, runs_dir=tmp_path, run_name="nan", progress=False)
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(tmp_path / "nan" / "checkpoints" / name, weights_only=False)
        assert all(
            torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
        )


def test_unknown_model_name_lists_the_choices(data_dir, tmp_path):
    task = tiny_task(data_dir, model={"name": "transformer"})
    with pytest.raises(InputError, match=r"model\.name.*transformer.*among choices.*tmva-cnn"):
        train_task(task, runs_dir=tmp_path, progress=False)


def test_unknown_config_field_is_named(data_dir, tmp_path):
    path = tmp_path / "bad.yaml"
    raw = tiny_task(data_dir).to_dict()
    raw["training"]["learning_rat"] = 0.1
    path.write_text(json.dumps(raw))  # JSON is YAML
    with pytest.raises(InputError, match=r"bad\.yaml.*field 'training\.learning_rat'"):
        train_task(path, runs_dir=tmp_path, progress=False)


def test_evaluating_a_run_without_checkpoint_is_a_user_error(trained, tmp_path):
    from fastreco.deploy.onnx import export_onnx
    from fastreco.evaluate.run import evaluate_run

    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    for name in ("config.yaml", "run.json"):
        shutil.copy(trained / name, empty / name)
    with pytest.raises(InputError, match="no checkpoint"):
        evaluate_run(empty)
    with pytest.raises(InputError, match="no checkpoint"):
        export_onnx(empty)

    foreign = tmp_path / "foreign"
    shutil.copytree(trained, foreign)
    info = json.loads((foreign / "run.json").read_text())
    info["run_schema_version"] = 99
    (foreign / "run.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="incompatible"):
        evaluate_run(foreign)
    with pytest.raises(InputError, match="not a fastreco run folder"):
        evaluate_run(tmp_path)


def _fastreco() -> list[str]:
    exe = Path(sys.executable).with_name("fastreco")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fastreco.cli"]


def test_ddp_on_two_cpu_processes(data_dir, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    tiny_task(data_dir).save(cfg)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [*_fastreco(), "train", str(cfg), "--devices", "2", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "tiny"
    _, info = load_run(run)
    assert info["devices"] == 2
    assert math.isfinite(info["best_val_loss"])
    assert (run / "checkpoints" / "best.ckpt").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    # each process sees half of the chunks (about 12 s on 2 cores: not marked slow)
    assert info["global_steps"] == math.ceil(STEPS_PER_EPOCH / 2)


def test_augmentation_draws_new_flips_every_epoch_in_worker_processes(data_dir):
    import torch

    from fastreco.train.datasets import ChunkDataset, make_loader

    dataset = ChunkDataset(data_dir, tiny_task(data_dir), "train", augment=True, seed=3)
    loader = make_loader(dataset, shuffle=False, num_workers=1, persistent=False)
    first = next(iter(loader))["x"]
    again = next(iter(loader))["x"]
    dataset.set_epoch(1)
    second = next(iter(loader))["x"]
    assert torch.equal(first, again)  # reproducible within an epoch
    assert not torch.equal(first, second)
    # flips only: the same images, summed over both axes
    torch.testing.assert_close(first.sum(dim=(1, 2, 3)), second.sum(dim=(1, 2, 3)))


def test_regression_loss_weighs_errors_by_the_expected_resolution() -> None:
    """A 1 % error at 100 GeV (~2.5 sigma) must cost more than a 1 % error at 2 GeV (~0.5 sigma),
    and equal pulls must cost the same at every energy."""
    import torch

    from fastreco.config import TaskConfig
    from fastreco.train.module import TaskModule, expected_resolution

    sigma = expected_resolution(torch.tensor([2.0, 100.0]))
    # test-beam terms: 2.8 %/sqrt(E) (+) 0.2 GeV/E (+) 0.3 %
    assert float(sigma[0]) == pytest.approx(0.1020, rel=0.01)
    assert float(sigma[1]) == pytest.approx(0.00457, rel=0.01)
    task = TaskConfig.from_dict(
        {"name": "e", "kind": "regression", "target": "energy", "classes": ["gamma"]}
    )
    module = TaskModule(task.to_dict(), (1, 7, 7))
    y = torch.ones(2)
    energy = torch.tensor([2.0, 100.0])
    per_event = [
        float(module.loss(torch.tensor([[1.01]]), y[i : i + 1], energy[i : i + 1]))
        for i in range(2)
    ]
    assert per_event[1] > 10 * per_event[0]
    same_pull = (1.0 + 0.5 * sigma)[:, None]
    costs = [
        float(module.loss(same_pull[i : i + 1], y[i : i + 1], energy[i : i + 1])) for i in range(2)
    ]
    assert costs[0] == pytest.approx(costs[1], rel=1e-4)
    # an event whose window missed 90 % of the energy pulls as hard at 100 GeV as at 2 GeV
    grads = []
    for i in range(2):
        out = torch.tensor([[0.1]], requires_grad=True)
        module.loss(out, y[i : i + 1], energy[i : i + 1]).backward()
        grads.append(float(out.grad))
    assert grads[1] == pytest.approx(grads[0], rel=0.15)
    with pytest.raises(ValueError, match="true energy"):
        module.loss(torch.tensor([[1.0]]), torch.ones(1))


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_batchnorm_keeps_running_statistics_in_training(freeze: bool) -> None:
    """With ``freeze_batchnorm`` a training step leaves BatchNorm's running statistics alone
    (eval mode) while the other layers train; without it they follow the batches."""
    task = TaskConfig.from_dict(
        {
            "name": "e",
            "kind": "regression",
            "target": "energy",
            "classes": ["gamma"],
            "model": {"name": "resnet-cnn"},
            "training": {"freeze_batchnorm": freeze},
        }
    )
    module = TaskModule(task.to_dict(), (1, 9, 9)).train()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    before = norms[0].running_mean.clone()
    module(torch.rand(8, 1, 9, 9) * 5.0)
    assert all(m.training != freeze for m in norms)
    assert module.model.training
    assert torch.equal(norms[0].running_mean, before) == freeze


def test_regression_reference_energy(data_dir):
    """``reference`` e5x5 / thresholded_sum / supercluster_sum make the targets E_true / E5x5 of
    the window's centre / E_true / the window's crystals above 2 sigma of the noise / E_true /
    the window plus its phi road; an unknown reference is named with the choices."""
    from fastreco.train.datasets import ChunkDataset

    regression = {"kind": "regression", "target": "energy", "classes": ["gamma"]}
    batches = {}
    for reference in ("window_sum", "e5x5", "thresholded_sum", "supercluster_sum"):
        task = TaskConfig.from_dict({**tiny_task(data_dir).to_dict(), **regression,
                                     "reference": reference})  # fmt: skip
        batches[reference] = ChunkDataset(data_dir, task, "train").load(0)
    b = batches["e5x5"]
    energy = b["x"][:, 0] * 10.0  # GeV (the energy channel's scale)
    c = energy.shape[-1] // 2
    np.testing.assert_allclose(
        b["reference"], energy[:, c - 2 : c + 3, c - 2 : c + 3].sum(axis=(1, 2)), rtol=1e-4
    )
    np.testing.assert_allclose(b["y"], b["energy"] / b["reference"], rtol=1e-5)
    np.testing.assert_allclose(
        batches["window_sum"]["reference"], energy.sum(axis=(1, 2)), rtol=1e-4, atol=1e-4
    )
    # the 5 x 5 core holds most of an 8 GeV photon: the target is a few % above 1
    assert 1.0 < float(np.median(b["y"])) < 1.1
    above = np.where(energy > 0.08, energy, 0.0).sum(axis=(1, 2))  # 2 sigma of the 40 MeV noise
    np.testing.assert_allclose(batches["thresholded_sum"]["reference"], above, rtol=1e-4)
    # the supercluster adds the phi road beside the window: never less than the window sum
    sc, ws = batches["supercluster_sum"]["reference"], batches["window_sum"]["reference"]
    assert np.all(sc >= ws - 1e-4)
    np.testing.assert_allclose(batches["supercluster_sum"]["y"], b["energy"] / sc, rtol=1e-5)
    with pytest.raises(InputError, match=r"field 'reference'.*window_sum"):
        TaskConfig.from_dict({**tiny_task(data_dir).to_dict(), "reference": "e3x3"})


def test_every_reference_energy_is_described_for_exported_models():
    from fastreco.config import REFERENCE_ENERGIES
    from fastreco.data.representations import reference_description

    texts = {name: reference_description(name, 10.0) for name in REFERENCE_ENERGIES}
    assert all("[GeV]" in text and "10.0" in text for text in texts.values())
    assert len(set(texts.values())) == len(REFERENCE_ENERGIES)
