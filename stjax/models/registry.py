"""Model registry: `build_model(config.model, spec, kernels=..., pretrained_config=...)` by
`config.model.name`.

Each model module registers its builder with `@register("name")`; the registry imports model
modules lazily by name so that building one model never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from stjax.errors import UserError
from stjax.kernels import Kernels

# name -> module that registers it on import.
_MODULES = {
  "st_link": "stjax.models.st_link",
  "st_llm": "stjax.models.st_llm",
  "sth_sepnet": "stjax.models.sth_sepnet",
}
_BUILDERS: dict[str, Callable[..., Any]] = {}


def register(name: str):
  """Decorator: `@register("st_link") def build(model_config, spec, kernels, pretrained_config) -> nn.Module`."""

  def deco(fn):
    _BUILDERS[name] = fn
    return fn

  return deco


def model_names() -> list[str]:
  return sorted(_MODULES)


def _module(name: str):
  if name not in _MODULES:
    raise UserError(f"config.model.name: unknown model {name!r}; known: {', '.join(model_names())}")
  return importlib.import_module(_MODULES[name])


def default_config(name: str):
  """The documented `config.model` defaults of the model registered as `name`."""
  return _module(name).default_config()


def build_model(model_config, spec, *, kernels: Kernels = Kernels(), pretrained_config: Any = None):
  """Builds the Flax module named by `model_config.name` for a dataset of shape `spec`.

  Args:
    model_config: `config.model`.
    spec: the dataset's `DataSpec`.
    kernels: resolved kernel choices (`stjax.kernels.resolve_kernels`); defaults suit any backend.
    pretrained_config: the pretrained backbone's own config when the model needs its geometry
      (Llama; read by `stjax.convert.pretrained.backbone_config_of`), else None.
  """
  _module(model_config.name)
  return _BUILDERS[model_config.name](model_config, spec, kernels, pretrained_config)
