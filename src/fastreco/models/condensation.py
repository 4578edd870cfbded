r"""Object condensation: the loss and the inference of Kieseler, "Object condensation: one-stage
grid-free multi-object reconstruction in physics detectors, graph and image data"
<https://arxiv.org/abs/2002.03605>.

Each hit :math:`j` gets a condensation score :math:`\beta_j \in (0, 1)` and coordinates
:math:`x_j` in a learned cluster space; its charge is :math:`q_j = \mathrm{arctanh}^2\beta_j +
q_{min}`. For each truth object :math:`k` the hit of highest charge among its hits is its
condensation point :math:`\alpha_k`. With :math:`M_{jk} = 1` when hit :math:`j` belongs to
object :math:`k`:

.. math::

    V_{att} = \frac1K \sum_k \frac{\sum_j M_{jk}\, q_j q_{\alpha_k} \|x_j - x_{\alpha_k}\|^2}
              {\sum_j M_{jk}}, \qquad
    V_{rep} = \frac1K \sum_k \frac{\sum_j (1 - M_{jk})\, q_j q_{\alpha_k}
              \max(0, 1 - \|x_j - x_{\alpha_k}\|)}{\sum_j (1 - M_{jk})},

    L_\beta = \frac1K \sum_k (1 - \beta_{\alpha_k}) + s_B\, \overline{\beta}_{noise}.

These are the normalizations of the reference implementation on PyPI (``object-condensation``,
``condensation_loss``), against which a test checks this one on identical inputs. For a batch of
events the loss is the mean of the per-event losses (objects never attract or repel across
events). Property heads (energy, class) are trained with the paper's weighting
:math:`\xi_j = \mathrm{arctanh}^2 \beta_j` per object.

Inference (:func:`condense`): take the hit of highest :math:`\beta` above :math:`t_\beta` as a
condensation point, assign every unassigned hit within :math:`t_d` of it in cluster space, repeat
with the next unassigned hit above :math:`t_\beta`; hits left over are noise (-1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from fastreco.errors import InputError

__all__ = ["condensation_loss", "condense", "property_loss"]


def _event_loss(
    beta: torch.Tensor, x: torch.Tensor, object_id: torch.Tensor, q_min: float
) -> dict[str, torch.Tensor] | None:
    eps = 1e-9
    not_noise = object_id > 0
    objects = torch.unique(object_id[not_noise])
    if len(objects) == 0:
        return None
    member = object_id[:, None] == objects[None, :]  # (n, K)
    q = torch.arctanh(beta) ** 2 + q_min  # (n,)
    alpha = torch.argmax(q[:, None] * member, dim=0)  # (K,)
    q_k = q[alpha][None, :]  # (1, K)
    dist = torch.cdist(x, x[alpha])  # (n, K)
    v_att = (q[:, None] * q_k * member * dist.square()).sum(0) / (member.sum(0) + eps)
    v_rep = (q[:, None] * q_k * (~member) * torch.relu(1 - dist)).sum(0) / ((~member).sum(0) + eps)
    noise = beta[~not_noise]
    return {
        "attractive": v_att.mean(),
        "repulsive": v_rep.mean(),
        "coward": (1 - beta[alpha]).mean(),
        "noise": noise.mean() if len(noise) else beta.new_zeros(()),
    }


def condensation_loss(
    beta: torch.Tensor,
    coords: torch.Tensor,
    object_id: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    q_min: float = 0.1,
) -> dict[str, torch.Tensor]:
    """The four object-condensation terms, averaged over the events of ``batch``.

    Args:
        beta: ``(N,)`` condensation scores in (0, 1).
        coords: ``(N, D)`` cluster-space coordinates.
        object_id: ``(N,)`` truth object of each hit, ``<= 0`` for noise.
        batch: ``(N,)`` sorted event index (``None``: one event).
        q_min: minimal charge.

    Returns:
        ``attractive``, ``repulsive``, ``coward``, ``noise``: scalar tensors (events without
        objects contribute only to ``noise``).
    """
    if batch is None:
        batch = torch.zeros(len(beta), dtype=torch.long, device=beta.device)
    counts = torch.bincount(batch).tolist()
    terms: dict[str, list[torch.Tensor]] = {}
    start = 0
    noise: list[torch.Tensor] = []
    for n in counts:
        sl = slice(start, start + n)
        start += n
        if n == 0:
            continue
        out = _event_loss(beta[sl], coords[sl], object_id[sl], q_min)
        if out is None:
            noise.append(beta[sl].mean())
            continue
        for key, value in out.items():
            (noise if key == "noise" else terms.setdefault(key, [])).append(value)
    zero = beta.sum() * 0.0
    result = {k: torch.stack(v).mean() if v else zero for k, v in terms.items()}
    for key in ("attractive", "repulsive", "coward"):
        result.setdefault(key, zero)
    result["noise"] = torch.stack(noise).mean() if noise else zero
    return result


def property_loss(
    beta: torch.Tensor, object_id: torch.Tensor, per_hit_loss: torch.Tensor
) -> torch.Tensor:
    r"""Mean over objects of :math:`\sum_j \xi_j L_j / \sum_j \xi_j` over the object's hits,
    :math:`\xi_j = \mathrm{arctanh}^2\beta_j` (object ids unique across the batch; <= 0 noise)."""
    keep = object_id > 0
    if not keep.any():
        return per_hit_loss.sum() * 0.0
    _, inverse = torch.unique(object_id[keep], return_inverse=True)
    xi = torch.arctanh(beta[keep]) ** 2 + 1e-6
    k = int(inverse.max()) + 1
    num = torch.zeros(k, device=beta.device).index_add(0, inverse, xi * per_hit_loss[keep])
    den = torch.zeros(k, device=beta.device).index_add(0, inverse, xi)
    return (num / den).mean()


def condense(
    beta: np.ndarray,
    coords: np.ndarray,
    *,
    t_beta: float = 0.3,
    t_d: float = 0.5,
    assign_radius: float = 0.0,
) -> np.ndarray:
    """Cluster one event's hits by condensation points.

    Condensation points are taken in decreasing beta among the hits above ``t_beta``, each
    one not yet within ``t_d`` of an earlier one. Then, as Kieseler's paper does
    (``assign_radius`` 0), each point collects the unclaimed hits within ``t_d`` in that order;
    or (``assign_radius`` > 0) every hit joins its *nearest* condensation point if that lies
    within ``assign_radius``, so a hit between two close-by objects goes to the nearer one
    rather than to the one of higher beta.

    Args:
        beta: ``(n,)`` condensation scores; coords: ``(n, D)`` cluster coordinates.
        t_beta: minimum score of a condensation point; t_d: radius in cluster space.
        assign_radius: 0, greedy assignment within ``t_d``; > 0, nearest-point assignment.

    Returns:
        ``(n,)`` int64 cluster index (0, 1, ... in decreasing beta of their condensation
        points), -1 for hits in no cluster.
    """
    if not (math.isfinite(assign_radius) and assign_radius >= 0):
        raise InputError("must be finite and >= 0", field="assign_radius", value=assign_radius)
    beta = np.asarray(beta, np.float64)
    coords = np.asarray(coords, np.float64)
    labels = np.full(len(beta), -1, np.int64)
    candidates = np.flatnonzero(beta > t_beta)
    candidates = candidates[np.argsort(-beta[candidates], kind="stable")]
    if len(candidates) == 0:
        return labels
    if assign_radius > 0:
        # a candidate is a condensation point unless an earlier point lies within t_d: the
        # points the greedy rule below would pick, found among the candidates only
        cand_tree = cKDTree(coords[candidates])
        taken = np.zeros(len(candidates), bool)
        chosen: list[int] = []
        for i in range(len(candidates)):
            if taken[i]:
                continue
            chosen.append(i)
            taken[cand_tree.query_ball_point(coords[candidates[i]], t_d)] = True
        cps = candidates[np.asarray(chosen, np.int64)]
        bound = assign_radius * (1.0 + 1e-9)
        dist, nearest = cKDTree(coords[cps]).query(coords, k=1, distance_upper_bound=bound)
        labels = np.where(dist <= assign_radius, nearest, -1).astype(np.int64)
        labels[cps] = np.arange(len(cps))
        return labels
    tree = cKDTree(coords)
    points: list[int] = []
    for c in candidates:
        if labels[c] >= 0:
            continue
        members = np.asarray(tree.query_ball_point(coords[c], t_d), dtype=np.int64)
        members = members[labels[members] < 0]
        labels[members] = len(points)
        labels[c] = len(points)
        points.append(int(c))
    return labels
