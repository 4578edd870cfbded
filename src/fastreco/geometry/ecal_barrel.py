"""CMS-like ECAL barrel: a cylinder of projective PbWO4 crystals addressed by (ieta, iphi).

Indices used inside fastreco are zero-based: ``ieta`` in ``[0, n_eta)`` counts from eta = -eta_max
and ``iphi`` in ``[0, n_phi)`` counts from phi = 0; the flat cell id is ``ieta * n_phi + iphi``.
:meth:`EcalBarrel.cms_ieta` converts to CMS's signed numbering (-85..-1, 1..85).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fastreco import constants as C
from fastreco.errors import InputError
from fastreco.geometry import DETECTORS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@DETECTORS.register("ecal")
@dataclasses.dataclass(frozen=True)
class EcalBarrel:
    """The barrel geometry. Defaults are CMS's (see :mod:`fastreco.constants`).

    Attributes:
        n_eta, n_phi: crystals along eta and phi.
        deta: crystal size in eta; the phi size is 2 pi / n_phi.
        inner_radius: radius of the crystal front faces [cm].
        crystal_length: crystal length along its (projective) axis [cm].
    """

    n_eta: int = C.ECAL_BARREL_N_ETA
    n_phi: int = C.ECAL_BARREL_N_PHI
    deta: float = C.ECAL_BARREL_CRYSTAL_DETA
    inner_radius: float = C.ECAL_BARREL_INNER_RADIUS
    crystal_length: float = C.ECAL_BARREL_CRYSTAL_LENGTH
    name: str = dataclasses.field(default="ecal", init=False)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return self.n_eta * self.n_phi

    @property
    def dphi(self) -> float:
        return 2.0 * math.pi / self.n_phi

    @property
    def eta_max(self) -> float:
        return 0.5 * self.n_eta * self.deta

    # --- addressing ----------------------------------------------------------------------------
    def cell_id(self, ieta: npt.ArrayLike, iphi: npt.ArrayLike) -> IntArray:
        """Flat cell id; ``iphi`` wraps around, ``ieta`` outside the barrel gives -1."""
        ieta = np.asarray(ieta, dtype=np.int64)
        iphi = np.mod(np.asarray(iphi, dtype=np.int64), self.n_phi)
        inside = (ieta >= 0) & (ieta < self.n_eta)
        return np.where(inside, ieta * self.n_phi + iphi, -1)

    def ieta_iphi(self, cell: npt.ArrayLike) -> tuple[IntArray, IntArray]:
        cell = np.asarray(cell, dtype=np.int64)
        return cell // self.n_phi, cell % self.n_phi

    def cms_ieta(self, ieta: npt.ArrayLike) -> IntArray:
        """CMS's signed ieta (-85..-1, 1..85) from the zero-based index."""
        ieta = np.asarray(ieta, dtype=np.int64)
        half = self.n_eta // 2
        return np.where(ieta < half, ieta - half, ieta - half + 1)

    # --- positions -----------------------------------------------------------------------------
    def eta_center(self, ieta: npt.ArrayLike) -> FloatArray:
        return -self.eta_max + (np.asarray(ieta, dtype=np.float64) + 0.5) * self.deta

    def phi_center(self, iphi: npt.ArrayLike) -> FloatArray:
        """Centre phi in [-pi, pi)."""
        phi = (np.asarray(iphi, dtype=np.float64) + 0.5) * self.dphi
        return np.mod(phi + math.pi, 2 * math.pi) - math.pi

    def cell_position(self, cell: npt.ArrayLike) -> dict[str, FloatArray]:
        """Centre of each crystal's front face: eta, phi [rad], x, y, z [cm]."""
        ieta, iphi = self.ieta_iphi(cell)
        eta = self.eta_center(ieta)
        phi = self.phi_center(iphi)
        r = self.inner_radius
        return {
            "eta": eta,
            "phi": phi,
            "x": r * np.cos(phi),
            "y": r * np.sin(phi),
            "z": r * np.sinh(eta),
        }

    def cell_at(self, eta: npt.ArrayLike, phi: npt.ArrayLike) -> IntArray:
        """Crystal containing direction (eta, phi); -1 outside the barrel's eta range."""
        eta = np.asarray(eta, dtype=np.float64)
        ieta = np.floor((eta + self.eta_max) / self.deta).astype(np.int64)
        iphi = np.floor(np.mod(np.asarray(phi, dtype=np.float64), 2 * math.pi) / self.dphi)
        return self.cell_id(ieta, iphi.astype(np.int64))

    def neighbours(self, cell: npt.ArrayLike, half_width: int = 1) -> IntArray:
        """Cells of the (2w+1) x (2w+1) window around each cell, shape (n, 2w+1, 2w+1).

        Axis 1 runs along ieta, axis 2 along iphi; phi wraps around, cells beyond the barrel's
        eta edges are -1.
        """
        ieta, iphi = self.ieta_iphi(np.atleast_1d(cell))
        offsets = np.arange(-half_width, half_width + 1)
        return self.cell_id(
            ieta[:, None, None] + offsets[None, :, None],
            iphi[:, None, None] + offsets[None, None, :],
        )

    def check_eta(self, eta: float, *, field: str = "eta") -> None:
        if not abs(eta) <= self.eta_max:
            raise InputError(
                f"outside the barrel (|eta| <= {self.eta_max:.3f})", field=field, value=eta
            )

    # --- (de)serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> EcalBarrel:
        return cls(**params)
