"""Model registry: `build_model(config.model, spec)` by `config.model.name`.

Each model module registers its builder with `@register("name")`; the registry imports model
modules lazily by name so that building one model never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from stjax.errors import UserError

# name -> module that registers it on import.
_MODULES = {
    "st_link": "stjax.models.st_link",
    "st_llm": "stjax.models.st_llm",
    "sth_sepnet": "stjax.models.sth_sepnet",
}
_BUILDERS: dict[str, Callable[..., Any]] = {}


def register(name: str):
  """Decorator: `@register("st_link") def build(model_config, spec) -> nn.Module`."""

  def deco(fn):
    _BUILDERS[name] = fn
    return fn

  return deco


def model_names() -> list[str]:
  return sorted(_MODULES)


def build_model(model_config, spec):
  """Builds the Flax module named by `model_config.name` for a dataset of shape `spec`."""
  name = model_config.name
  if name not in _MODULES:
    raise UserError(f"config.model.name: unknown model {name!r}; known: {', '.join(model_names())}")
  if name not in _BUILDERS:
    importlib.import_module(_MODULES[name])
  return _BUILDERS[name](model_config, spec)
