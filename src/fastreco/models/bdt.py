"""Boosted decision trees on engineered features: the classical baseline of the classifiers.

A thin wrapper around scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
(histogram-binned gradient boosting, the LightGBM algorithm) that remembers the feature names,
so that a saved model scores a DataFrame by column name, and saves/loads with joblib together
with the versions that wrote it.

Shapes:
    - **input:** a DataFrame holding the ``features`` columns, or an array (n_events, n_features)
      in that order; NaN is a legal value (the trees learn where missing values go), +-inf is
      turned into NaN.
    - **output:** :meth:`BDTClassifier.predict_score` gives P(signal), shape (n_events,).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier

from fastreco import __version__
from fastreco.errors import InputError

log = logging.getLogger(__name__)

#: Version of the saved-file layout (a dict pickled by joblib).
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BDTConfig:
    """Hyper-parameters of the BDT (names as in HistGradientBoostingClassifier).

    Attributes:
        max_iter: most boosting iterations (trees).
        learning_rate: shrinkage of each tree.
        max_leaf_nodes: leaves per tree.
        min_samples_leaf: fewest events in a leaf.
        l2_regularization: L2 penalty on leaf values.
        early_stopping: stop when the validation loss has not improved for
            ``n_iter_no_change`` iterations.
        validation_fraction: share of the training events held out for early stopping.
        n_iter_no_change: patience of early stopping.
        random_state: seed of the validation split and of the trees' randomness.
    """

    max_iter: int = 300
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    early_stopping: bool = True
    validation_fraction: float = 0.2
    n_iter_no_change: int = 20
    random_state: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BDTClassifier:
    """A gradient-boosted-trees classifier on named features.

    Args:
        features: column names, in the order the model uses them.
        config: hyper-parameters; ``**overrides`` replace single fields of it.

    Example::

        bdt = BDTClassifier(["r9", "s4_s25"], random_state=1).fit(train_df, train_df["label"])
        score = bdt.predict_score(test_df)  # P(signal), shape (n,)
    """

    def __init__(
        self, features: Sequence[str], config: BDTConfig | None = None, **overrides: Any
    ) -> None:
        if not features:
            raise InputError("a BDT needs at least one feature", field="features")
        self.features = [str(f) for f in features]
        self.config = dataclasses.replace(config or BDTConfig(), **overrides)
        self.model: HistGradientBoostingClassifier | None = None

    def __repr__(self) -> str:
        state = "fitted" if self.model is not None else "unfitted"
        return f"BDTClassifier({len(self.features)} features, {state}, {self.config})"

    # --- data --------------------------------------------------------------------------------
    def matrix(self, X: pd.DataFrame | npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The feature matrix, shape (n, n_features), with +-inf replaced by NaN."""
        if isinstance(X, pd.DataFrame):
            missing = [f for f in self.features if f not in X.columns]
            if missing:
                raise InputError(
                    f"missing feature columns {missing}; have {list(X.columns)}", field="features"
                )
            m = X[self.features].to_numpy(dtype=np.float64, copy=True)
        else:
            m = np.array(X, dtype=np.float64, copy=True)
            if m.ndim != 2 or m.shape[1] != len(self.features):
                raise InputError(
                    f"expected shape (n, {len(self.features)}), got {m.shape}", field="X"
                )
        inf = np.isinf(m)
        if inf.any():
            log.debug("replacing %d infinite feature values by NaN", int(inf.sum()))
            m[inf] = np.nan
        return m

    # --- training and inference --------------------------------------------------------------
    def fit(
        self,
        X: pd.DataFrame | npt.ArrayLike,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None = None,
    ) -> BDTClassifier:
        """Train on features ``X`` and labels ``y`` (1 = signal, 0 = background), shape (n,)."""
        labels = np.asarray(y).astype(np.int64)
        if set(np.unique(labels)) != {0, 1}:
            raise InputError("training needs labels of both classes, 0 and 1", field="y")
        c = self.config
        self.model = HistGradientBoostingClassifier(
            max_iter=c.max_iter,
            learning_rate=c.learning_rate,
            max_leaf_nodes=c.max_leaf_nodes,
            min_samples_leaf=c.min_samples_leaf,
            l2_regularization=c.l2_regularization,
            early_stopping=c.early_stopping,
            validation_fraction=c.validation_fraction if c.early_stopping else None,
            n_iter_no_change=c.n_iter_no_change,
            random_state=c.random_state,
        )
        self.model.fit(self.matrix(X), labels, sample_weight=sample_weight)
        log.info(
            "BDT trained on %d events, %d features: %d iterations",
            len(labels),
            len(self.features),
            self.n_iter,
        )
        return self

    @property
    def n_iter(self) -> int:
        """Boosting iterations actually run (fewer than ``max_iter`` after early stopping)."""
        return int(self._fitted().n_iter_)

    def _fitted(self) -> HistGradientBoostingClassifier:
        if self.model is None:
            raise RuntimeError("the BDT is not trained: call fit() or load() first")
        return self.model

    def predict_score(self, X: pd.DataFrame | npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(signal) for each event, shape (n,)."""
        proba = self._fitted().predict_proba(self.matrix(X))
        return proba[:, 1].astype(np.float64)

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save with joblib (atomically), with the features, config and versions."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format_version": FORMAT_VERSION,
            "features": self.features,
            "config": self.config.to_dict(),
            "model": self._fitted(),
            "sklearn_version": sklearn.__version__,
            "fastreco_version": __version__,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            joblib.dump(payload, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BDTClassifier:
        """Load a model written by :meth:`save`.

        Only load files you trust: joblib unpickles arbitrary objects.
        """
        payload = joblib.load(path)
        if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
            raise InputError("not a fastreco BDT file (or an unknown format version)", source=path)
        if payload["sklearn_version"] != sklearn.__version__:
            log.warning(
                "%s was saved with scikit-learn %s, this is %s: scores may differ",
                path,
                payload["sklearn_version"],
                sklearn.__version__,
            )
        obj = cls(payload["features"], BDTConfig(**payload["config"]))
        obj.model = payload["model"]
        return obj
