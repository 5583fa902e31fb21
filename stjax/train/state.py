"""The training state: one plain pytree that the jitted step maps to a new one.

Everything that changes during training lives here, so a checkpoint of it (plus the data
iterator position) is a complete snapshot: resuming from it replays the run exactly.
"""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """Attributes:
  step: [] int32, optimizer steps taken.
  params: the model's `params` collection (trainable and frozen alike).
  opt_state: optax state of the masked optimizer.
  model_state: the model's other variable collections, e.g. {"memory": ...} for MRFFN keys or
    {"graph": ...} for the STH-SepNet hypergraph; updated by training steps, read by eval.
  rng: [2] uint32 raw PRNG key; each step splits off its dropout key from it.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: dict[str, Any]
  rng: jax.Array

  def variables(self) -> dict[str, Any]:
    """The `variables` dict for `model.apply`."""
    return {"params": self.params, **self.model_state}


def split_variables(variables: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
  """`model.init` output -> (params, other collections)."""
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables
