"""Event display of one ECAL-barrel event.

Left: the crystal energies in a ``(2w+1) x (2w+1)`` window of (ieta, iphi) around the seed (the
most energetic crystal), on a log colour scale, with the truth impact points of the particles
that reached the calorimeter (the primary and its daughters: the two photons of a π0, the e+e-
pair of a converted photon), labelled with their names and energies. Right: all hits of the event
in (eta, phi) over the full barrel.

Axes of the window are crystal offsets from the seed (phi wraps around); a crystal with index
``i`` covers offsets ``[i - 0.5, i + 0.5]`` and a truth point is placed at its continuous
position in crystal units, so a photon hitting the seed crystal's centre sits at (0, 0).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from fastreco.data.store import EventBatch, EventStore
from fastreco.errors import InputError
from fastreco.evaluate.plots import StyledFigure, add_label, plot_style
from fastreco.geometry.ecal_barrel import EcalBarrel

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Lowest energy on the colour scale [GeV] (well below the 40 MeV noise per crystal).
MIN_DISPLAY_ENERGY = 1e-3


def particle_name(pdg: int) -> str:
    """The PDG name of a particle (``"gamma"``, ``"pi0"``, ``"e-"``), or its id if unknown."""
    try:
        from particle import Particle

        return str(Particle.from_pdgid(int(pdg)).name)
    except Exception:  # particle raises its own (Invalid/NotFound) exceptions for unknown ids
        return str(int(pdg))


@dataclasses.dataclass(frozen=True)
class EventImage:
    """Energies of a window of crystals around a centre crystal.

    Attributes:
        image: shape (2w+1, 2w+1) [GeV]; axis 0 along ieta, axis 1 along iphi; ``image[w, w]``
            is the centre crystal. Crystals outside the barrel are NaN.
        ieta0, iphi0: zero-based indices of the centre crystal.
        half_width: w.
    """

    image: FloatArray
    ieta0: int
    iphi0: int
    half_width: int


def _wrap(d: npt.ArrayLike, n: int) -> np.ndarray:
    """Offsets wrapped into [-n/2, n/2)."""
    return np.mod(np.asarray(d) + n / 2, n) - n / 2


def event_image(
    batch: EventBatch,
    geometry: EcalBarrel,
    event: int = 0,
    *,
    half_width: int = 12,
    center_cell: int | None = None,
) -> EventImage:
    """The (2w+1) x (2w+1) crystal-energy window of one event around its seed.

    Args:
        batch: the events; hit ``energy`` [GeV] is shown.
        geometry: the barrel, to turn cell ids into (ieta, iphi).
        event: index of the event within ``batch``.
        half_width: w; the default 12 gives the 25 x 25 window.
        center_cell: the window's centre; default the most energetic crystal.
    """
    h0, h1 = int(batch.offsets[event]), int(batch.offsets[event + 1])
    cells = np.asarray(batch.hits["cell"][h0:h1], dtype=np.int64)
    energy = np.asarray(batch.hits["energy"][h0:h1], dtype=np.float64)
    size = 2 * half_width + 1
    if center_cell is None:
        if len(cells) == 0:
            raise InputError(f"event {event} has no hits to display")
        center_cell = int(cells[np.argmax(energy)])
    ieta0, iphi0 = (int(v) for v in geometry.ieta_iphi(center_cell))
    ieta, iphi = geometry.ieta_iphi(cells)
    de = ieta - ieta0
    dp = _wrap(iphi - iphi0, geometry.n_phi).astype(np.int64)
    inside = (np.abs(de) <= half_width) & (np.abs(dp) <= half_width)
    image = np.zeros((size, size), dtype=np.float64)
    np.add.at(image, (de[inside] + half_width, dp[inside] + half_width), energy[inside])
    rows = ieta0 + np.arange(-half_width, half_width + 1)
    image[(rows < 0) | (rows >= geometry.n_eta), :] = np.nan
    return EventImage(image=image, ieta0=ieta0, iphi0=iphi0, half_width=half_width)


def _crystal_coordinates(
    geometry: EcalBarrel, eta: FloatArray, phi: FloatArray, ieta0: int, iphi0: int
) -> tuple[FloatArray, FloatArray]:
    """Continuous (ieta, iphi) offsets from crystal (ieta0, iphi0) of directions (eta, phi)."""
    u = (eta + geometry.eta_max) / geometry.deta - 0.5 - ieta0
    v = np.mod(phi, 2 * math.pi) / geometry.dphi - 0.5 - iphi0
    return u, _wrap(v, geometry.n_phi)


def _title(truth: dict[str, np.ndarray], event_label: str | None) -> str:
    prim = np.flatnonzero(truth["parent"] == -1)
    if len(prim) == 0:
        return event_label or "event"
    p = int(prim[0])
    text = (
        f"{particle_name(int(truth['pdg'][p]))}, E = {float(truth['energy'][p]):.1f} GeV, "
        f"η = {float(truth['eta'][p]):.3f}, φ = {float(truth['phi'][p]):.3f}"
    )
    if int(truth["pdg"][p]) == 22 and int(truth["converted"][p]):
        text += f", converted at r = {float(truth['conversion_radius'][p]):.0f} cm"
    return f"{event_label}: {text}" if event_label else text


def event_display(
    batch: EventBatch,
    geometry: EcalBarrel,
    event: int = 0,
    *,
    half_width: int = 12,
    event_label: str | None = None,
) -> Figure:
    """Figure of one event: the seed window with truth markers, and the full-barrel view.

    Args:
        batch: events holding ``event``; its truth table gives the markers.
        geometry: the barrel of the store (``EventStore(...).detector``).
        event: index within ``batch``.
        half_width: window half width w in crystals (25 x 25 for w = 12).
        event_label: prefix of the title (e.g. ``"event 17"``).
    """
    if not isinstance(geometry, EcalBarrel):
        raise InputError(
            "the event display draws the ECAL barrel only",
            field="detector",
            value=getattr(geometry, "name", type(geometry).__name__),
        )
    img = event_image(batch, geometry, event, half_width=half_width)
    t0, t1 = int(batch.truth_offsets[event]), int(batch.truth_offsets[event + 1])
    truth = {k: np.asarray(v[t0:t1]) for k, v in batch.truth.items()}
    h0, h1 = int(batch.offsets[event]), int(batch.offsets[event + 1])
    cells = np.asarray(batch.hits["cell"][h0:h1], dtype=np.int64)
    energy = np.asarray(batch.hits["energy"][h0:h1], dtype=np.float64)
    w = half_width

    with plot_style():
        fig = StyledFigure(figsize=(17, 7.5), layout="constrained")
        ax, axb = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})

        # --- seed window ------------------------------------------------------------------------
        shown = np.where(img.image > 0, img.image, np.nan)
        positive = img.image[img.image > 0]
        vmax = float(positive.max()) if len(positive) else 1.0
        vmin = max(MIN_DISPLAY_ENERGY, float(positive.min()) if len(positive) else 1e-3)
        norm = LogNorm(vmin=min(vmin, vmax / 10), vmax=vmax)
        mesh = ax.imshow(
            shown.T,  # rows of the picture = iphi, columns = ieta
            origin="lower",
            extent=(-w - 0.5, w + 0.5, -w - 0.5, w + 0.5),
            cmap="viridis",
            norm=norm,
            interpolation="nearest",
            aspect="equal",
        )
        fig.colorbar(
            mesh, ax=ax, label=f"crystal energy [GeV], {2 * w + 1}×{2 * w + 1} window", pad=0.01
        )
        ax.set_xlabel(f"iη − iη(seed)   [seed iη = {int(geometry.cms_ieta(img.ieta0))}]")
        ax.set_ylabel(f"iφ − iφ(seed)   [seed iφ = {img.iphi0 + 1}]")
        ax.set_xlim(-w - 0.5, w + 0.5)
        ax.set_ylim(-w - 0.5, w + 0.5)

        reached = (truth["reached_calo"] == 1) & np.isfinite(truth["impact_eta"])
        rows = np.flatnonzero(reached)
        u, v = _crystal_coordinates(
            geometry,
            truth["impact_eta"][rows].astype(np.float64),
            truth["impact_phi"][rows].astype(np.float64),
            img.ieta0,
            img.iphi0,
        )
        markers = {22: "*", 11: "^", -11: "v"}
        for k, r in enumerate(rows):
            pdg = int(truth["pdg"][r])
            label = f"{particle_name(pdg)} {float(truth['energy'][r]):.2f} GeV"
            if truth["parent"][r] == -1:
                label += " (primary)"
            ax.plot(
                u[k],
                v[k],
                linestyle="none",
                marker=markers.get(pdg, "o"),
                markersize=14,
                markerfacecolor="none",
                markeredgecolor=f"C{(k + 1) % 10}",
                markeredgewidth=2,
                label=label,
            )
        prim = np.flatnonzero(truth["parent"] == -1)
        if len(prim) and not reached[prim[0]]:  # e.g. a pi0: draw its direction instead
            p = int(prim[0])
            pu, pv = _crystal_coordinates(
                geometry,
                np.array([truth["eta"][p]], np.float64),
                np.array([truth["phi"][p]], np.float64),
                img.ieta0,
                img.iphi0,
            )
            ax.plot(
                pu,
                pv,
                "x",
                color="red",
                markersize=12,
                markeredgewidth=2,
                label=f"{particle_name(int(truth['pdg'][p]))} direction "
                f"{float(truth['energy'][p]):.2f} GeV (primary)",
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="x-small", framealpha=0.8)
        add_label(ax)
        fig.suptitle(_title(truth, event_label), fontsize="medium")

        # --- full barrel ----------------------------------------------------------------------
        pos = geometry.cell_position(cells)
        keep = energy > 0
        if keep.any():
            order = np.argsort(energy[keep])
            e_keep = energy[keep][order]
            sc = axb.scatter(
                pos["eta"][keep][order],
                pos["phi"][keep][order],
                c=e_keep,
                s=6 + 30 * (e_keep / e_keep.max()),
                cmap="viridis",
                norm=LogNorm(
                    vmin=min(MIN_DISPLAY_ENERGY, float(e_keep.min())), vmax=float(e_keep.max())
                ),
                marker="s",
                linewidths=0,
            )
            fig.colorbar(sc, ax=axb, label="hit energy [GeV]", pad=0.01)
        if len(rows):
            axb.plot(
                truth["impact_eta"][rows],
                truth["impact_phi"][rows],
                "o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor="red",
                label="truth impacts",
            )
            axb.legend(loc="upper right", fontsize="x-small")
        axb.set_xlim(-geometry.eta_max, geometry.eta_max)
        axb.set_ylim(-math.pi, math.pi)
        axb.set_xlabel("η")
        axb.set_ylabel("φ [rad]")
        axb.set_title(f"full barrel: {len(cells)} hits, {energy.sum():.1f} GeV", fontsize="small")
    return fig


def save_event_display(
    store_path: str | os.PathLike[str],
    event_index: int,
    out_png: str | os.PathLike[str],
    *,
    half_width: int = 12,
    dpi: int = 110,
) -> Path:
    """Read event ``event_index`` (global index) of an event store and save its display as PNG.

    Written atomically (temporary file, then rename). Returns the PNG's path.
    """
    store = EventStore(store_path)
    if not 0 <= event_index < store.n_events:
        raise InputError(
            f"out of range: the store has {store.n_events} events",
            source=store_path,
            field="event_index",
            value=event_index,
        )
    batch = store.read(event_index, event_index + 1)
    fig = event_display(
        batch, store.detector, 0, half_width=half_width, event_label=f"event {event_index}"
    )
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("wrote event display %s", out)
    return out
