"""Object condensation: the loss against the reference package, batching, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastreco.errors import InputError
from fastreco.models.condensation import condensation_loss, condense, property_loss

reference = pytest.importorskip("object_condensation.pytorch.losses")


def _inputs(n: int, n_objects: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    beta = torch.rand(n, generator=g).clamp(0.01, 0.99)
    coords = torch.randn(n, 3, generator=g)
    object_id = torch.randint(0, n_objects + 1, (n,), generator=g)
    return beta, coords, object_id


@pytest.mark.parametrize(("n", "n_objects", "seed"), [(50, 1, 0), (300, 4, 1), (1000, 12, 2)])
def test_loss_equals_the_reference_implementation(n, n_objects, seed):
    beta, coords, object_id = _inputs(n, n_objects, seed)
    ref = reference.condensation_loss(beta=beta, x=coords, object_id=object_id, q_min=0.1)
    ours = condensation_loss(beta, coords, object_id, q_min=0.1)
    for key in ("attractive", "repulsive", "coward", "noise"):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-6, atol=1e-7)


def test_batched_loss_is_the_mean_over_events_and_never_mixes_them():
    events = [_inputs(200, 3, s) for s in (3, 4)]
    beta = torch.cat([e[0] for e in events])
    coords = torch.cat([e[1] for e in events])
    # same object ids in both events: they must still be different objects
    object_id = torch.cat([e[2] for e in events])
    batch = torch.repeat_interleave(torch.arange(2), 200)
    ours = condensation_loss(beta, coords, object_id, batch, q_min=0.1)
    single = [
        reference.condensation_loss(beta=b, x=x, object_id=o, q_min=0.1) for b, x, o in events
    ]
    for key in ("attractive", "repulsive", "coward", "noise"):
        expected = (single[0][key] + single[1][key]) / 2
        torch.testing.assert_close(ours[key], expected, rtol=1e-6, atol=1e-7)


def test_loss_gradients_pull_members_together():
    beta, coords, object_id = _inputs(100, 2, 5)
    coords.requires_grad_(True)
    loss = condensation_loss(beta, coords, object_id)["attractive"]
    loss.backward()
    with torch.no_grad():
        moved = coords - 0.05 * coords.grad
        after = condensation_loss(beta, moved, object_id)["attractive"]
    assert after < loss


def test_property_loss_is_the_beta_weighted_mean_per_object():
    beta = torch.tensor([0.9, 0.5, 0.9, 0.2])
    object_id = torch.tensor([1, 1, 2, 0])
    per_hit = torch.tensor([1.0, 3.0, 2.0, 100.0])
    xi = torch.arctanh(beta) ** 2
    expected = ((xi[0] * 1 + xi[1] * 3) / (xi[0] + xi[1]) + 2.0) / 2
    torch.testing.assert_close(property_loss(beta, object_id, per_hit), expected, rtol=1e-5, atol=0)


def test_condense_finds_the_condensation_points_and_leaves_noise():
    coords = np.array([[0, 0], [0.1, 0], [0, 0.2], [5, 5], [5.1, 5], [10, 0]], float)
    beta = np.array([0.9, 0.1, 0.2, 0.8, 0.05, 0.1])
    labels = condense(beta, coords, t_beta=0.5, t_d=0.5)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, -1])


def test_condense_assigns_each_hit_once_to_the_highest_beta_point():
    coords = np.array([[0.0, 0], [0.4, 0], [0.8, 0]])
    beta = np.array([0.9, 0.1, 0.8])
    # hit 1 is within t_d of both points: it goes to the first (higher beta) one
    labels = condense(beta, coords, t_beta=0.5, t_d=0.5)
    np.testing.assert_array_equal(labels, [0, 0, 1])
    assert condense(np.array([0.1]), np.zeros((1, 2))).tolist() == [-1]


def test_condense_with_an_assign_radius_gives_each_hit_to_its_nearest_point():
    """Hit 1 lies within t_d of the higher-beta point 0 but nearer point 2: the greedy rule
    gives it to 0, nearest-point assignment to 2; hit 3 is beyond t_d of every point but within
    the assignment radius of point 2; hit 4 is beyond both radii."""
    coords = np.array([[0.0, 0], [0.45, 0], [0.7, 0], [1.25, 0], [3.0, 0]])
    beta = np.array([0.9, 0.1, 0.8, 0.1, 0.1])
    greedy = condense(beta, coords, t_beta=0.5, t_d=0.5)
    np.testing.assert_array_equal(greedy, [0, 0, 1, -1, -1])
    nearest = condense(beta, coords, t_beta=0.5, t_d=0.5, assign_radius=0.6)
    np.testing.assert_array_equal(nearest, [0, 1, 1, 1, -1])
    with pytest.raises(InputError, match="assign_radius"):
        condense(beta, coords, assign_radius=-1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_assignment_keeps_the_greedy_condensation_points(seed):
    """Nearest-point assignment picks its condensation points among the candidates only; they
    must be those of the greedy rule (each greedy cluster's highest-beta member), every hit
    going to the nearest of them within the radius."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.0, 1.0, 400)
    coords = rng.uniform(0.0, 4.0, (400, 3))
    greedy = condense(beta, coords, t_beta=0.6, t_d=0.5)
    points = [
        np.flatnonzero(greedy == c)[np.argmax(beta[greedy == c])] for c in range(greedy.max() + 1)
    ]
    points = np.asarray(points)
    labels = condense(beta, coords, t_beta=0.6, t_d=0.5, assign_radius=0.7)
    np.testing.assert_array_equal(labels[points], np.arange(len(points)))
    dist = np.linalg.norm(coords[:, None, :] - coords[points][None, :, :], axis=2)
    expected = np.where(dist.min(1) <= 0.7, dist.argmin(1), -1)
    expected[points] = np.arange(len(points))
    np.testing.assert_array_equal(labels, expected)
