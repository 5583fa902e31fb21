"""Keeping non-finite numbers out of checkpoints, and saying where a diverged run can resume.

The state saved at step S holds the parameters after update S; their loss is first seen at step
S + 1. So a saved step stays "unchecked" until the next step's loss is finite (or its validation
was, at an evaluation step). When a loss is non-finite right after a save, that checkpoint (last
and best) is moved to checkpoints/quarantine: it is never resumed from. Before any save, the
whole state (params, optimizer state, model state) must be finite, and so must the validation MAE
before it can become `best`. The error names the step and the newest checkpoint really intact.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.train.checkpoint import Checkpoints

_HOW = "docs/training.md, 'When things go wrong'"


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class DivergenceGuard:
  """Checks losses, validations and states of one run; `resumed_step` (if any) starts unchecked."""

  def __init__(self, checkpoints: Checkpoints, resumed_step: int | None):
    self.checkpoints = checkpoints
    self.unchecked = resumed_step  # a saved step whose parameters' loss was not seen yet
    self._all_finite = jax.jit(_all_finite)

  def check_loss(self, step: int, loss: float) -> None:
    """The training loss of `step` (computed from the parameters after update step - 1)."""
    if math.isfinite(loss):
      if self.unchecked == step - 1:
        self.unchecked = None
      return
    raise self._diverged(
      f"loss is {loss} at step {step}", suspect=step - 1 if self.unchecked == step - 1 else None
    )

  def check_validation(self, step: int, val: dict) -> None:
    """The validation metrics of the parameters after update `step` (before they may be saved)."""
    if not math.isfinite(val["mae"]):
      raise self._diverged(f"validation MAE is {val['mae']} at step {step}")

  def check_state(self, step: int, state) -> None:
    """Every floating-point number of the state about to be saved as `step` is finite."""
    if not bool(jax.device_get(self._all_finite(state))):
      raise self._diverged(f"the state after step {step} holds non-finite numbers")

  def saved(self, step: int, validated: bool) -> None:
    """Checkpoint `step` was saved; `validated` if its validation MAE was checked finite."""
    self.unchecked = None if validated else step

  def _diverged(self, what: str, suspect: int | None = None) -> UserError:
    moved = ""
    if suspect is not None:
      where = [
        str(self.checkpoints.quarantine(kind, suspect))
        for kind, steps in (("last", self.checkpoints.all_steps()), ("best", self.checkpoints.best_steps()))
        if suspect in steps
      ]
      if where:
        moved = f" (the parameters saved at step {suspect} give it; moved to {' and '.join(where)})"
    intact = self.checkpoints.latest_step()
    if intact is None:
      then = "no intact checkpoint exists: rerun with a lower --config.optim.learning_rate to start over"
    else:
      then = (
        f"the newest intact checkpoint is step {intact} ({self.checkpoints.root / 'last' / str(intact)}): "
        "rerun with a lower --config.optim.learning_rate to resume from it"
      )
    return UserError(f"training diverged: {what}{moved}; {then} ({_HOW})")
