"""Shared test helper: a jitted MAE train step for models with a `memory` collection (ST-LINK)."""

import jax
import jax.numpy as jnp
import optax


def mae_train_step(model, tx, y):
  """-> jitted step(params, opt_state, memory, batch, key) -> (params, opt_state, memory, mae).

  Loss: mean |pred - y| + the model's aux loss; the memory collection is threaded through.
  """

  @jax.jit
  def step(params, opt_state, memory, batch, key):
    def loss_fn(p):
      (pred, aux), new = model.apply({"params": p, "memory": memory}, batch, train=True, rngs={"dropout": key},
                                     mutable=["memory"])
      mae = jnp.mean(jnp.abs(pred - y))
      return mae + aux["aux_loss"], (new["memory"], mae)
    (_, (memory, mae)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, memory, mae

  return step
