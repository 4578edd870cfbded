"""fastreco: fast detector reconstruction with deep learning.

The package is organised by pipeline stage: ``geometry`` -> ``sim`` -> ``data`` (event store)
-> ``reco`` (classical baselines) -> ``models`` / ``train`` -> ``evaluate`` -> ``deploy``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
