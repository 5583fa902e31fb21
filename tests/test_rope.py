"""Rotary embeddings: relative-only dot products, norm preservation, Laplacian eigenvectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.errors import UserError
from stjax.layers.embeddings import NodeEmbedding, laplacian_node_init
from stjax.layers.rope import (
  NodePhases,
  apply_rotary,
  laplacian_eigenvectors,
  rope_frequencies,
  temporal_angles,
)


def np_rotate(x, ang):
  """float64 reference: rotate pairs (x[j], x[j + d/2]) by ang[j]."""
  h = x.shape[-1] // 2
  c, s = np.cos(ang), np.sin(ang)
  return np.concatenate([x[..., :h] * c - x[..., h:] * s, x[..., :h] * s + x[..., h:] * c], -1)


def test_frequencies_match_formula():
  np.testing.assert_allclose(rope_frequencies(8, 100.0), 100.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)
  with pytest.raises(ValueError):
    rope_frequencies(7)


def test_apply_rotary_matches_numpy(rng):
  x = rng.normal(size=(2, 5, 3, 16))
  ang = rng.normal(size=(5, 1, 8)) * 3
  np.testing.assert_allclose(
    apply_rotary(jnp.asarray(x, jnp.float32), jnp.asarray(ang, jnp.float32)), np_rotate(x, ang), atol=1e-5
  )


def test_temporal_dot_depends_only_on_time_difference(rng):
  q, k = rng.normal(size=(2, 32)).astype(np.float32)
  dots = []
  for shift in [0.0, 5.0, -73.0, 1000.0]:
    pos = jnp.array([-3.0 + shift, -49.0 + shift])
    ang = temporal_angles(pos, 32)
    dots.append(float(apply_rotary(jnp.asarray(q), ang[0]) @ apply_rotary(jnp.asarray(k), ang[1])))
  np.testing.assert_allclose(dots, dots[0], rtol=1e-4, atol=1e-4)
  # And it does change with the difference itself.
  ang = temporal_angles(jnp.array([0.0, 7.0]), 32)
  other = float(apply_rotary(jnp.asarray(q), ang[0]) @ apply_rotary(jnp.asarray(k), ang[1]))
  assert abs(other - dots[0]) > 1e-3


def test_spatial_dot_depends_only_on_phase_difference(rng):
  phases = NodePhases(dim=16)
  emb = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  params = phases.init(jax.random.key(0), emb)
  phi = phases.apply(params, emb)  # [4, 8]
  w = np.asarray(params["params"]["scale"]["kernel"])
  b = np.asarray(params["params"]["scale"]["bias"])
  np.testing.assert_allclose(
    phi, (np.asarray(emb, np.float64) @ w + b) * 10000.0 ** (-np.arange(0, 16, 2) / 16), rtol=1e-5, atol=1e-6
  )
  q, k = rng.normal(size=(2, 16))
  delta = rng.normal(size=8) * 4
  base = np_rotate(q, np.asarray(phi[0], np.float64)) @ np_rotate(k, np.asarray(phi[1], np.float64))
  shifted = apply_rotary(jnp.asarray(q, jnp.float32), phi[0] + delta) @ apply_rotary(
    jnp.asarray(k, jnp.float32), phi[1] + delta
  )
  np.testing.assert_allclose(float(shifted), base, rtol=1e-4, atol=1e-4)


def test_rotation_preserves_norms(rng):
  x = jnp.asarray(rng.normal(size=(3, 7, 2, 24)), jnp.float32)
  ang = jnp.asarray(rng.normal(size=(7, 1, 12)) * 50, jnp.float32)
  np.testing.assert_allclose(
    jnp.linalg.norm(apply_rotary(x, ang), axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5
  )


def test_laplacian_eigenvectors_are_eigenvectors(rng):
  a = rng.uniform(size=(9, 9)) * (rng.uniform(size=(9, 9)) < 0.5)
  vecs = laplacian_eigenvectors(a, 4)
  w = (a + a.T) / 2
  np.fill_diagonal(w, 0)
  d = 1 / np.sqrt(w.sum(1))
  lap = np.eye(9) - d[:, None] * w * d[None]
  evals = np.linalg.eigvalsh(lap)
  for j in range(4):
    lam = vecs[:, j] @ lap @ vecs[:, j]
    np.testing.assert_allclose(lap @ vecs[:, j], lam * vecs[:, j], atol=1e-9)
    np.testing.assert_allclose(lam, evals[j + 1], atol=1e-9)
  with pytest.raises(UserError, match="node_emb_init"):
    laplacian_eigenvectors(a, 9)


def test_laplacian_node_init_path_graph_is_smooth():
  n = 12
  adj = np.eye(n, k=1) + np.eye(n, k=-1)
  table = NodeEmbedding(n, 3, laplacian_node_init(adj)).init(jax.random.key(0))["params"]["node_emb"]
  np.testing.assert_allclose(np.std(np.asarray(table), 0), np.sqrt(2 / (n + 3)), rtol=1e-4)
  fiedler = np.asarray(table[:, 0])
  # The Fiedler vector of a path cuts it into two contiguous halves: one sign change, in the middle.
  assert np.count_nonzero(np.diff(np.sign(fiedler))) == 1
  assert np.sign(fiedler[5]) != np.sign(fiedler[6])
