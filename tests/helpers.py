"""Helpers shared by several test files."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import optax

TINY_ST_LINK = pathlib.Path(__file__).parent / "fixtures" / "tiny_st_link.py"  # a config file


def load_config(path: pathlib.Path, *args):
  """`get_config(*args)` of a config file, loaded by path as stjax.train does."""
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


def mae_train_step(model, tx, y):
  """-> jitted step(params, opt_state, memory, batch, key) -> (params, opt_state, memory, mae).

  Loss: mean |pred - y| + the model's aux loss; the memory collection is threaded through.
  """

  @jax.jit
  def step(params, opt_state, memory, batch, key):
    def loss_fn(p):
      (pred, aux), new = model.apply(
        {"params": p, "memory": memory}, batch, train=True, rngs={"dropout": key}, mutable=["memory"]
      )
      mae = jnp.mean(jnp.abs(pred - y))
      return mae + aux["aux_loss"], (new["memory"], mae)

    (_, (memory, mae)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, memory, mae

  return step


def assert_one_line(excinfo, *needles: str) -> None:
  """The error of `pytest.raises(...) as excinfo` is one line containing every needle."""
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  for needle in needles:
    assert needle in msg, msg
