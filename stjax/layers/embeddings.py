"""Embeddings shared by ST-LINK and ST-LLM: time of day, day of week, node identity.

Both are learnable tables with Xavier-uniform initialisation (as ST-LLM's released code does).
The node table can instead start from graph Laplacian eigenvectors (`laplacian_node_init`).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stjax.layers.rope import laplacian_eigenvectors

xavier = nn.initializers.xavier_uniform()


class CalendarEmbedding(nn.Module):
  """Time-of-day and day-of-week tables.

  Attributes:
    steps_per_day: rows of the time-of-day table (48 for 30-min data, 288 for 5-min data).
    features: width of each embedding.
  """

  steps_per_day: int
  features: int

  @nn.compact
  def __call__(self, tod: jnp.ndarray, dow: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """tod: [...] fraction of day in [0, 1); dow: [...] int 0..6 -> two [..., features] arrays.

    The time-of-day index is floor(tod * steps_per_day), clipped into the table (as ST-LLM).
    """
    tod_table = self.param("time_day", xavier, (self.steps_per_day, self.features))
    dow_table = self.param("time_week", xavier, (7, self.features))
    tod_idx = jnp.clip(jnp.floor(tod * self.steps_per_day).astype(jnp.int32), 0, self.steps_per_day - 1)
    dow_idx = jnp.clip(dow.astype(jnp.int32), 0, 6)
    return tod_table[tod_idx], dow_table[dow_idx]


class NodeEmbedding(nn.Module):
  """A free learnable vector per node: [num_nodes, features].

  Attributes:
    num_nodes: N.
    features: width.
    embedding_init: table initialiser (Xavier uniform, or `laplacian_node_init(adjacency)`).
  """

  num_nodes: int
  features: int
  embedding_init: Callable = xavier

  @nn.compact
  def __call__(self) -> jnp.ndarray:
    return self.param("node_emb", self.embedding_init, (self.num_nodes, self.features))


def laplacian_node_init(adjacency: np.ndarray) -> Callable:
  """Initialiser: the table starts as the graph's first non-trivial Laplacian eigenvectors.

  Each eigenvector column is rescaled to the standard deviation of the Xavier-uniform init of the
  same table (sqrt(2 / (N + F))), so later layers see the same input scale as with random init.
  Deterministic: the key is not used.
  """
  adjacency = np.asarray(adjacency, np.float64)

  def init(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jnp.ndarray:
    del key
    n, f = shape
    if adjacency.shape != (n, n):
      raise ValueError(f"adjacency {adjacency.shape} does not match {n} nodes")
    vecs = laplacian_eigenvectors(adjacency, f)
    target = np.sqrt(2.0 / (n + f))
    vecs = vecs / np.maximum(vecs.std(0, keepdims=True), 1e-12) * target
    return jnp.asarray(vecs, dtype)

  return init
