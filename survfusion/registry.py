"""The model registry: every survival model by name, like timm's ``create_model``.

Model classes register themselves with ``@register(name)`` where they are defined (the paper's three
in ``models``, the comparators and ablations in ``fusions``). This module imports neither at import
time, so model files depend on it and not the other way round; ``build_model`` and ``model_names``
import both modules on first use, which fills the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from survfusion.errors import UserError

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a model available to ``build_model(name)``."""

    def add(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return add


def _populate() -> None:
    import survfusion.fusions
    import survfusion.models  # noqa: F401  (registration happens at import)


def model_names() -> list[str]:
    _populate()
    return sorted(_REGISTRY)


def check_model_name(name: str) -> None:
    """A ``UserError`` listing the valid names unless ``name`` is registered."""
    if name not in model_names():
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")


def build_model(
    name: str,
    *,
    feat_dim: int = 1024,
    rna_dim: int = 19359,
    clinical_dim: int = 27,
    rank: int = 64,
    dropout: float = 0.25,
):
    """Instantiate a registered model (a ``models.SurvivalModel``); the defaults are the paper's
    dimensions. An unknown name raises and lists the valid ones."""
    from survfusion.models import ModelDims

    check_model_name(name)
    dims = ModelDims(
        feat_dim=feat_dim, rna_dim=rna_dim, clinical_dim=clinical_dim, rank=rank, dropout=dropout
    )
    return _REGISTRY[name](dims)
