"""ONNX export: ONNX Runtime agrees with PyTorch at several batch sizes for every model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastreco.deploy.onnx import INPUT_NAME, export_module, preprocessing_path
from fastreco.deploy.registry import EXPORTERS, get_exporter
from fastreco.errors import InputError
from fastreco.models import MODELS, build_model

ort = pytest.importorskip("onnxruntime")

BATCH_SIZES = (1, 2, 37, 256)
#: Input shape of each registered model in these tests: windows for image models, a feature
#: vector for the MLP.
SHAPES = {
    "tmva-cnn": (1, 11, 11),
    "tmva-dnn": (1, 11, 11),
    "resnet-cnn": (2, 11, 11),
    "mlp": (13,),
    "hgcal-cnn3d": (1, 6, 8, 8),
}


#: Point-cloud models take ``(x, batch)`` and build kNN graphs inside ``forward``: GravNet and
#: EdgeConv export through ``export_graph_module`` (tested below), the DRN does not (its
#: graph pooling matches nodes with a data-dependent loop).
GRAPH_MODELS = {"gravnet", "edgeconv", "hgcal-drn"}
#: Graph models of CLUE's layer clusters: exported with their graph search inside, checked
#: against ONNX Runtime in tests/test_layer_clusters.py.
LAYER_CLUSTER_MODELS = {"layer_gravnet", "layer_edgeconv"}
#: LArTPC pixel-ID models: per-pixel outputs and dynamic image sizes, their export and ONNX
#: Runtime parity are tested in tests/test_lartpc_models.py.
LARTPC_MODELS = {"lartpc-patch-cnn", "lartpc-unet", "lartpc-sparse-unet"}  # sparse: PyTorch only


def test_every_registered_model_is_tested():
    tested = set(SHAPES) | GRAPH_MODELS | LARTPC_MODELS | LAYER_CLUSTER_MODELS
    assert set(MODELS.names()) <= tested


@pytest.mark.parametrize(
    ("name", "n_out"), [*((name, 1) for name in sorted(SHAPES)), ("resnet-cnn", 4)]
)
def test_onnx_matches_torch_at_dynamic_batch(tmp_path, name, n_out):
    shape = SHAPES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, n_out)
    # non-trivial BatchNorm statistics, so eval mode (running stats) is what gets exported
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = export_module(model, shape, tmp_path / f"{name}.onnx", verify=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch_dim = session.get_inputs()[0].shape[0]
    assert isinstance(batch_dim, str), f"batch axis frozen to {batch_dim}"
    rng = np.random.default_rng(3)
    model.eval()
    for n in BATCH_SIZES:
        x = rng.random((n, *shape), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        assert got.shape == (n, n_out)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"batch {n}")


def test_exporter_registry():
    assert get_exporter("ONNX") is EXPORTERS.resolve("onnx")
    with pytest.raises(InputError, match=r"format.*among choices.*onnx"):
        get_exporter("tensorrt")


def test_preprocessing_path():
    assert preprocessing_path("runs/x/model.onnx").name == "model.preprocessing.json"
    assert json.dumps(str(preprocessing_path("a.onnx"))).endswith('a.preprocessing.json"')


def test_exportable_knn_matches_the_kdtree_search():
    from fastreco.data.pointcloud import knn_indices, knn_indices_exportable

    gen = torch.Generator().manual_seed(3)
    points = torch.rand(70, 3, generator=gen)
    batch = torch.tensor([0] * 40 + [1] * 25 + [2] * 5)  # the last event has fewer than k + 1
    ref = knn_indices(points, batch, 6)
    got = knn_indices_exportable(points, batch, 6)
    assert torch.equal(ref.sort(dim=1).values, got.sort(dim=1).values)


def test_edgeconv_layer_equals_torch_geometric_edgeconv():
    """The gathered (N, k) formulation is torch-geometric's EdgeConv (max) on the same graph."""
    from torch_geometric.nn import EdgeConv

    from fastreco.data.pointcloud import knn_indices
    from fastreco.models.gravnet import EdgeConvLayer

    torch.manual_seed(1)
    layer = EdgeConvLayer(5, 12, k=6).eval()
    reference = EdgeConv(layer.mlp, aggr="max")
    x = torch.randn(90, 5)
    batch = torch.tensor([0] * 50 + [1] * 36 + [2] * 4)  # the last event is smaller than k
    idx = knn_indices(x, batch, 6)
    edges = torch.stack([idx.reshape(-1), torch.arange(90).repeat_interleave(6)])
    with torch.no_grad():
        torch.testing.assert_close(layer(x, batch), reference(x, edges), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gravnet", "edgeconv"])
def test_graph_models_export_with_their_knn_inside(name, tmp_path):
    import onnxruntime as ort

    from fastreco.data.pointcloud import N_FEATURES
    from fastreco.deploy.onnx import GRAPH_OUTPUTS, export_graph_module

    torch.manual_seed(0)
    model = build_model(name, (N_FEATURES,), 4, hidden=16, blocks=2, k=8).eval()
    path = export_graph_module(model, N_FEATURES, tmp_path / f"{name}.onnx")  # verifies at N=137
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(GRAPH_OUTPUTS)
    x = torch.rand(300, N_FEATURES)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([150, 100, 50]))
    with torch.no_grad():
        ref = model(x, batch)
    got = dict(
        zip(GRAPH_OUTPUTS, session.run(None, {"x": x.numpy(), "batch": batch.numpy()}), strict=True)
    )
    for key in GRAPH_OUTPUTS:
        np.testing.assert_allclose(got[key], ref[key].numpy(), rtol=1e-4, atol=1e-5)
