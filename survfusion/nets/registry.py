"""The model registry: every survival model by name, like timm's ``create_model``.

Model classes register themselves with ``@register(name)`` where they are defined (the paper's three
in ``models``, the comparators and ablations in ``fusions``), and ``survfusion/nets/__init__.py``
imports those files, as timm's package does: whoever imports anything of ``survfusion.nets`` finds
the registry filled. This module imports no model file, so model files depend on it and not the
other way round. ``ModelDims`` is here, with the paper's dimensions as its defaults, written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from survfusion.errors import UserError


@dataclass(frozen=True)
class ModelDims:
    """Input sizes and hyper-parameters that fix a model's shape (stored in every bundle); the
    defaults are the paper's: UNI's 1024-d tiles, 19,359 genes, 27 clinical inputs, rank 64."""

    feat_dim: int = 1024
    rna_dim: int = 19359
    clinical_dim: int = 27
    rank: int = 64
    dropout: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)


_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a model available to ``build_model(name)``."""

    def add(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return add


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def check_model_name(name: str) -> None:
    """A ``UserError`` listing the valid names unless ``name`` is registered."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")


def build_model(name: str, **dims: int | float):
    """Instantiate a registered model (a ``models.SurvivalModel``); ``dims`` override ``ModelDims``'
    defaults (the paper's). An unknown name raises and lists the valid ones."""
    check_model_name(name)
    return _REGISTRY[name](ModelDims(**dims))  # type: ignore[arg-type]
