"""stjax.layers.dropout: packed 16-bit masks keep the bernoulli statistics and flax's interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.layers.dropout import Dropout, dropout, keep_mask, keep_probability


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3, 0.5])
def test_keep_mask_frequency_and_independence(rate, rng):
  key = jax.random.key(int(rng.integers(2**31)))
  mask = np.asarray(keep_mask(key, rate, (64, 4097)))  # odd last axis: the last word is half used
  p = keep_probability(rate)
  assert abs(p - (1 - rate)) <= 2.0**-17
  n = mask.size
  assert abs(mask.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
  # The two halves of one word, and neighbouring words, are independent: joint frequency p^2.
  pairs = mask[:, 0:4096:2] & mask[:, 1:4096:2]
  across = mask[:, 1:4095:2] & mask[:, 2:4096:2]
  for joint in (pairs, across):
    assert abs(joint.mean() - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / joint.size)
  # Rows differ (the mask is not one row repeated).
  assert (mask[0] != mask[1]).any()


def test_dropout_scales_kept_values_exactly_and_keeps_the_mean(rng):
  key = jax.random.key(int(rng.integers(2**31)))
  x = jnp.asarray(rng.normal(size=(8, 33, 16)), jnp.float32)
  y = np.asarray(dropout(key, 0.2, x))
  keep = np.asarray(keep_mask(key, 0.2, x.shape))
  np.testing.assert_array_equal(y[~keep], 0.0)
  np.testing.assert_allclose(y[keep], np.asarray(x)[keep] / keep_probability(0.2), rtol=1e-6)
  ones = np.asarray(dropout(key, 0.2, jnp.ones((400, 1000))))
  assert abs(ones.mean() - 1.0) < 5 * np.sqrt(0.2 / 0.8 / ones.size)


def test_module_matches_flax_interface(rng):
  x = jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)
  module = Dropout(0.3)
  assert module.apply({}, x, deterministic=True) is x
  assert Dropout(0.0).apply({}, x, deterministic=False) is x
  key = jax.random.key(3)
  y = module.apply({}, x, deterministic=False, rngs={"dropout": key})
  y2 = module.apply({}, x, deterministic=False, rngs={"dropout": key})
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
  with pytest.raises(Exception):
    module.apply({}, x, deterministic=False)  # no "dropout" rng
  with pytest.raises(ValueError, match="rate"):
    keep_mask(key, 1.0, (3,))


def test_mask_does_not_depend_on_sharding():
  """Values are a function of the key only; a batch-sharded mask equals the single-device one."""
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  devices = np.array(jax.devices()[:8])
  mesh = Mesh(devices, ("data",))
  key = jax.random.key(7)
  shape = (len(devices) * 2, 5, 9)
  single = np.asarray(jax.jit(lambda k: keep_mask(k, 0.1, shape))(key))
  sharded = jax.jit(lambda k: keep_mask(k, 0.1, shape), out_shardings=NamedSharding(mesh, P("data")))(key)
  np.testing.assert_array_equal(np.asarray(sharded), single)
