"""The train and predict steps: pure functions of (state, batch), jitted with explicit shardings."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from stjax import metrics, sharding
from stjax.data.windows import MODEL_INPUT_KEYS, TRAIN_KEYS
from stjax.errors import UserError
from stjax.train.state import TrainState


def make_loss_fn(protocol, target_scaler) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """(pred [B, T_out, N, C] scaled, y [B, T_out, N, C] original units) -> scalar loss.

  "masked_mae": MAE in original units over the targets the protocol's null rule keeps;
  "mse": mean squared error in scaled units over all targets (STH-SepNet's training loss).
  """
  if protocol.loss == "masked_mae":
    return lambda pred, y: metrics.masked_mae(target_scaler.inverse(pred), y, protocol.null_rule)
  if protocol.loss == "mse":
    return lambda pred, y: jnp.mean(jnp.square(pred - target_scaler.transform(y)))
  raise UserError(f"protocol {protocol.name}: unknown loss {protocol.loss!r}")


def _cast_floats(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _cast_inputs(inputs: dict, dtype) -> dict:
  """The series x in the compute dtype; tod / dow stay as they are (bf16 keeps 8 significant bits:
  floor(tod * 288) of a bf16 tod picks the wrong time-of-day slot for 126 of the 288)."""
  return {**inputs, "x": inputs["x"].astype(dtype)}


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  loss_fn,
  trainable,
  compute_dtype: str = "float32",
  schedule: Callable | None = None,
):
  """The (un-jitted) step: (state, batch) -> (new state, measurements).

  Args:
    model: the Flax module.
    tx: the optimizer (already masked so frozen params never change).
    loss_fn: (pred, y) -> scalar, see `make_loss_fn`.
    trainable: pytree of bools like params; gradients of frozen params are dropped before the
      optimizer (so XLA need not compute them) and excluded from the gradient norm.
    compute_dtype: "bfloat16" runs forward/backward with bf16 params and inputs; loss in float32.
    schedule: step -> learning rate, reported as `lr`.
  """
  dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else None

  def step(state: TrainState, batch: dict[str, jax.Array]):
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS}
    collections = sorted(state.model_state)

    def loss_of(params):
      p, x = params, inputs
      if dtype is not None:
        p, x = _cast_floats(params, dtype), _cast_inputs(inputs, dtype)
      (pred, aux), new_model_state = model.apply(
        {"params": p, **state.model_state},
        x,
        train=True,
        rngs={"dropout": jax.random.fold_in(state.rng, state.step)},
        mutable=collections,
      )
      data_loss = loss_fn(pred.astype(jnp.float32), batch["y"])
      aux = {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}
      aux_loss = aux.get("aux_loss", jnp.float32(0))
      return data_loss + aux_loss, (data_loss, aux, new_model_state)

    (loss, (data_loss, aux, new_model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if dtype is not None:  # Mutated collections come back in the compute dtype.
      new_model_state = jax.tree.map(
        lambda new, old: new.astype(old.dtype), dict(new_model_state), state.model_state
      )
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, model_state=dict(new_model_state)
    )
    measurements = {
      "loss": loss,
      "data_loss": data_loss,
      "grad_norm": optax.tree.norm(grads),
      **{f"aux/{k}": v for k, v in aux.items() if k != "aux_loss"},
    }
    measurements["aux_loss"] = aux.get("aux_loss", jnp.float32(0))
    if schedule is not None:
      measurements["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return new_state, measurements

  return step


def make_predict_fn(
  model: nn.Module, target_scaler, compute_dtype: str = "float32", nonnegative: bool = False
):
  """(state, batch) -> predictions [B, T_out, N, C] float32 in ORIGINAL units (eval mode), clipped
  at 0 when `nonnegative` (count data: `DataBundle.nonnegative`)."""
  dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else None

  def predict(state: TrainState, batch):
    variables, x = state.variables(), {k: batch[k] for k in MODEL_INPUT_KEYS}
    if dtype is not None:
      variables, x = _cast_floats(variables, dtype), _cast_inputs(x, dtype)
    pred, _ = model.apply(variables, x, train=False)
    pred = target_scaler.inverse(pred.astype(jnp.float32))
    return jnp.maximum(pred, 0.0) if nonnegative else pred

  return predict


def jit_train_step(step, state_shardings: TrainState, mesh):
  """jit with explicit shardings: state as given, batch rows split over (data, fsdp) and nodes
  over `nodes`, measurements replicated; the incoming state's buffers are donated."""
  batch_sh = sharding.batch_shardings(mesh, TRAIN_KEYS)
  return jax.jit(
    step,
    in_shardings=(state_shardings, batch_sh),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def compile_train_step(exp: Any):
  """The experiment's jitted train step (see `jit_train_step`)."""
  cfg = exp.config
  step = make_train_step(
    exp.model,
    exp.tx,
    make_loss_fn(exp.bundle.protocol, exp.bundle.target_scaler),
    exp.trainable,
    cfg.train.compute_dtype,
    exp.schedule,
  )
  return jit_train_step(step, exp.state_shardings, exp.mesh)
