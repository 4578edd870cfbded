"""Models, registered by name in :data:`MODELS` (adding a model is adding a file)."""

from fastreco.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
