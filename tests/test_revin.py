"""RevIN: exact inverse, per-series statistics, safe on constant (all-missing) series."""

import jax
import jax.numpy as jnp
import numpy as np

from stjax.layers.revin import RevIN


def _with_affine(rng, f):
  m = RevIN(f)
  params = m.init(jax.random.key(0), jnp.zeros((1, 4, 1, f)), method=RevIN.normalize)
  params = {
    "params": {
      "weight": jnp.asarray(rng.uniform(0.5, 2, f), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=f), jnp.float32),
    }
  }
  return m, params


def test_normalize_matches_numpy_and_inverts(rng):
  x = rng.normal(size=(2, 12, 5, 3)) * rng.uniform(1, 50, size=(1, 1, 5, 3)) + 30
  m, params = _with_affine(rng, 3)
  y, stats = m.apply(params, jnp.asarray(x, jnp.float32), method=RevIN.normalize)
  mu = x.mean(1, keepdims=True)
  sd = np.sqrt(x.var(1, keepdims=True) + 1e-5)
  w, b = np.asarray(params["params"]["weight"]), np.asarray(params["params"]["bias"])
  np.testing.assert_allclose(y, (x - mu) / sd * w + b, rtol=1e-4, atol=1e-4)
  back = m.apply(params, y, stats, method=RevIN.denormalize)
  np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-3)
  # Inverse of a feature subset (predictions of the first 2 input features).
  sub = m.apply(params, y[..., :2], stats, slice(0, 2), method=RevIN.denormalize)
  np.testing.assert_allclose(sub, x[..., :2], rtol=1e-5, atol=1e-3)


def test_constant_series_give_finite_values():
  m = RevIN(2)
  params = m.init(jax.random.key(0), jnp.zeros((1, 4, 1, 2)), method=RevIN.normalize)
  x = jnp.zeros((2, 6, 3, 2))
  y, stats = m.apply(params, x, method=RevIN.normalize)
  assert np.all(np.isfinite(y)) and np.all(np.asarray(y) == 0)
  np.testing.assert_array_equal(m.apply(params, y, stats, method=RevIN.denormalize), 0)
  grads = jax.grad(
    lambda p: m.apply(
      p, m.apply(p, x + 1.0, method=RevIN.normalize)[0] ** 2, stats, method=RevIN.denormalize
    ).sum()
  )(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
