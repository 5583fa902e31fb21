"""Pairwise graphs as edge lists and message passing by segment sums.

An `EdgeList` stores the non-zero entries of an adjacency matrix A [N, N] as three arrays of
equal length E: `dst` (row), `src` (column) and `weight`, so A[dst[e], src[e]] = weight[e] and
propagation is (A H)[v] = sum_{e: dst[e] = v} weight[e] * H[src[e]]. Padding entries carry
weight 0. Every operation costs O(E * features): no dense N x N matrix is ever formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from stjax.errors import UserError


@struct.dataclass
class EdgeList:
  """A weighted directed graph: A[dst[e], src[e]] = weight[e] (duplicates add up).

  src, dst: [E] int32 in [0, num_nodes); weight: [E] float. `dst_sorted` says that `dst` is
  non-decreasing, which lets segment sums take the faster sorted path.
  """

  src: jax.Array
  dst: jax.Array
  weight: jax.Array
  num_nodes: int = struct.field(pytree_node=False)
  dst_sorted: bool = struct.field(pytree_node=False, default=False)

  @property
  def num_edges(self) -> int:
    return self.src.shape[0]

  def transpose(self) -> "EdgeList":
    """The graph of A^T (every edge reversed)."""
    return EdgeList(self.dst, self.src, self.weight, self.num_nodes, dst_sorted=False)


def edge_list_from_dense(adjacency, name: str = "adjacency") -> EdgeList:
  """Host-side conversion of a dense [N, N] matrix to the edge list of its non-zero entries."""
  a = np.asarray(adjacency)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise UserError(f"{name}: expected a square [N, N] matrix, got shape {a.shape}")
  if not np.all(np.isfinite(a)):
    raise UserError(f"{name}: contains NaN or infinite entries")
  if np.any(a < 0):
    raise UserError(f"{name}: contains negative weights; propagation expects weights >= 0")
  dst, src = np.nonzero(a)  # row-major, so dst is sorted
  return EdgeList(
    jnp.asarray(src, jnp.int32),
    jnp.asarray(dst, jnp.int32),
    jnp.asarray(a[dst, src], jnp.float32),
    num_nodes=a.shape[0],
    dst_sorted=True,
  )


def edge_list_from_neighbors(neighbors: jax.Array, weights: jax.Array) -> EdgeList:
  """Row-wise neighbour lists -> edge list: A[i, neighbors[i, j]] = weights[i, j].

  neighbors: [N, k] int; weights: [N, k]. The result has E = N * k edges sorted by dst.
  """
  n, k = neighbors.shape
  dst = jnp.repeat(jnp.arange(n, dtype=jnp.int32), k)
  return EdgeList(
    neighbors.reshape(-1).astype(jnp.int32), dst, weights.reshape(-1), num_nodes=n, dst_sorted=True
  )


def add_self_loops(graph: EdgeList, weight: float = 1.0) -> EdgeList:
  """A + weight * I, as extra edges appended at the end."""
  loops = jnp.arange(graph.num_nodes, dtype=jnp.int32)
  return EdgeList(
    jnp.concatenate([graph.src, loops]),
    jnp.concatenate([graph.dst, loops]),
    jnp.concatenate([graph.weight, jnp.full((graph.num_nodes,), weight, graph.weight.dtype)]),
    graph.num_nodes,
    dst_sorted=False,
  )


def in_degree(graph: EdgeList) -> jax.Array:
  """Row sums of A: deg[v] = sum_{e: dst[e] = v} weight[e]. Returns [N]."""
  return jax.ops.segment_sum(graph.weight, graph.dst, graph.num_nodes, indices_are_sorted=graph.dst_sorted)


def row_normalize(graph: EdgeList) -> EdgeList:
  """D^-1 A with D = diag(row sums); rows that sum to 0 stay 0 (no division by zero)."""
  deg = in_degree(graph)
  inv = jnp.where(deg > 0, 1.0 / jnp.where(deg > 0, deg, 1.0), 0.0)
  return graph.replace(weight=graph.weight * inv[graph.dst])


def mixprop_operator(graph: EdgeList) -> EdgeList:
  """MTGNN's propagation matrix P = D^-1 (A + I), D the row sums of A + I."""
  return row_normalize(add_self_loops(graph))


def propagate(h: jax.Array, graph: EdgeList, node_axis: int = 0) -> jax.Array:
  """(A H) along `node_axis`: out[v] = sum_{e: dst[e] = v} weight[e] * h[src[e]].

  h: [..., N, ...] with N at `node_axis`; returns the same shape. Cost O(E * other dims).
  """
  if h.shape[node_axis] != graph.num_nodes:
    raise ValueError(f"propagate: axis {node_axis} of {h.shape} is not {graph.num_nodes} nodes")
  x = jnp.moveaxis(h, node_axis, 0)
  messages = x[graph.src] * graph.weight.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
  out = jax.ops.segment_sum(messages, graph.dst, graph.num_nodes, indices_are_sorted=graph.dst_sorted)
  return jnp.moveaxis(out, 0, node_axis)


class MixProp(nn.Module):
  """MTGNN mix-hop propagation: H0 = X, Hk = beta X + (1 - beta) P H(k-1), out = Dense([H0..HK]).

  P = D^-1 (A + I) is built from the edge list inside the call, so the edge weights may be
  differentiable (adaptive graphs). x: [..., N, ..., C] with nodes at `node_axis`; returns
  [..., N, ..., features].
  """

  features: int
  depth: int = 2
  beta: float = 0.05
  node_axis: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, graph: EdgeList) -> jax.Array:
    p = mixprop_operator(graph)
    hops = [x]
    h = x
    for _ in range(self.depth):
      h = self.beta * x + (1.0 - self.beta) * propagate(h, p, self.node_axis)
      hops.append(h)
    return nn.Dense(self.features, name="mlp")(jnp.concatenate(hops, axis=-1))
