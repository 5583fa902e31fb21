"""Rotary position embeddings in time and in space (the rotations of SE-Attention).

A rotary embedding turns pairs of feature dims by angles: dim j of the first half is paired with
dim j of the second half (the "rotate half" layout) and both are turned by `angle[j]`. Rotating
q and k of a token by `theta_s` makes q_s . k_t depend on `theta_s - theta_t` only.

- Temporal RoPE: angle[j] = position * omega_j, position = the time offset in steps (so
  non-contiguous input windows keep their true spacing), omega_j = base^(-2j / dim).
- Spatial RoPE: angle[j] = phi[n, j] = s(e_n)[j] * omega_j, where e_n is node n's learnable
  embedding and s a small Dense. q.k then depends on phi[n] - phi[m]: nodes with nearby embeddings
  are "close" in the rotated space, the way nearby steps are close in time.

`laplacian_eigenvectors` gives graph-aware initial node embeddings (see `embeddings.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from stjax.errors import UserError


def rope_frequencies(dim: int, base: float = 10000.0) -> jnp.ndarray:
  """omega_j = base^(-2j/dim) for j < dim/2: [dim // 2] float32. `dim` must be even."""
  if dim % 2:
    raise ValueError(f"rotary dim must be even, got {dim}")
  return base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def temporal_angles(positions: jnp.ndarray, dim: int, base: float = 10000.0) -> jnp.ndarray:
  """Angles for time positions. positions: [...] (steps, any real value) -> [..., dim // 2]."""
  return jnp.asarray(positions, jnp.float32)[..., None] * rope_frequencies(dim, base)


def apply_rotary(x: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
  """Rotates pairs (x[j], x[j + dim/2]) by angles[j].

  Args:
    x: [..., dim] (e.g. [batch, seq, heads, head_dim]).
    angles: broadcastable to [..., dim // 2] (e.g. [seq, 1, dim // 2]).
  Returns: [..., dim], same dtype as x; norms are preserved (each pair is a 2-D rotation).
  """
  half = x.shape[-1] // 2
  if angles.shape[-1] != half:
    raise ValueError(f"angles last dim {angles.shape[-1]} != head dim / 2 = {half}")
  cos = jnp.cos(angles).astype(jnp.float32)
  sin = jnp.sin(angles).astype(jnp.float32)
  x1 = x[..., :half].astype(jnp.float32)
  x2 = x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x.dtype)


class NodePhases(nn.Module):
  """Spatial rotary phases phi[n, j] = s(e_n)[j] * omega_j.

  Attributes:
    dim: rotary dim the phases are for (phases have dim // 2 entries).
    base: RoPE base of omega_j.
  """

  dim: int
  base: float = 10000.0

  @nn.compact
  def __call__(self, node_emb: jnp.ndarray) -> jnp.ndarray:
    """node_emb: [..., embed] -> phases [..., dim // 2] float32."""
    scale = nn.Dense(self.dim // 2, name="scale", dtype=jnp.float32)(node_emb.astype(jnp.float32))
    return scale * rope_frequencies(self.dim, self.base)


def laplacian_eigenvectors(adjacency: np.ndarray, k: int) -> np.ndarray:
  """The k smallest non-trivial eigenvectors of the normalised graph Laplacian.

  The graph is symmetrised ((A + A^T) / 2, absolute weights, self loops dropped);
  L = I - D^-1/2 A D^-1/2 (isolated nodes get D^-1/2 = 0). Eigenvectors are sorted by eigenvalue,
  the first (trivial, eigenvalue 0) is skipped, and each has its sign fixed so that its largest
  magnitude entry is positive (deterministic across LAPACK builds).

  Args:
    adjacency: [N, N] weights.
    k: number of vectors; must be <= N - 1.
  Returns: [N, k] float64, columns of unit norm.
  """
  a = np.asarray(adjacency, np.float64)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise UserError(f"adjacency: must be a square matrix for Laplacian init, got shape {a.shape}")
  n = a.shape[0]
  if not 1 <= k <= n - 1:
    raise UserError(f"model.node_emb_init=laplacian: needs 1 <= embedding dim <= N - 1 = {n - 1}, got {k}")
  if not np.all(np.isfinite(a)):
    raise UserError("adjacency: contains NaN or inf")
  w = np.abs(a + a.T) / 2
  np.fill_diagonal(w, 0.0)
  deg = w.sum(1)
  dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
  lap = np.eye(n) - dinv[:, None] * w * dinv[None, :]
  _, vecs = np.linalg.eigh(lap)
  vecs = vecs[:, 1 : k + 1]
  sign = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(k)])
  return vecs * np.where(sign == 0, 1.0, sign)
