"""Learned graphs: MTGNN's sparse adaptive graph and an adaptive KNN hypergraph.

Both need all-pairs scores to *select* neighbours. The selection is discrete, so it is computed
without gradients in row blocks (`blockwise_top_k`: memory O(N * block), never O(N^2)); the
weights of the selected pairs are then recomputed from the embeddings by gathers, which is
exactly differentiable and costs O(N * k). With a refresh interval R > 1 the selection is state
in the `graph` collection, redone every R training steps, so the per-step cost is O(N * k).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from stjax.errors import UserError
from stjax.graph.edges import EdgeList
from stjax.graph.hypergraph import Incidence, incidence_from_members

MTGNN_TOP_K = 20  # MTGNN subgraph_size: columns kept per row of the adaptive graph (STH-SepNet default)


def blockwise_top_k(
  score_rows: Callable[[jax.Array], jax.Array], num_rows: int, k: int, block: int
) -> tuple[jax.Array, jax.Array]:
  """Top-k per row of a [num_rows, num_cols] score matrix that is never materialised.

  score_rows(rows [b] int32) -> [b, num_cols] scores of those rows. Rows are processed `block` at a
  time with `lax.map`, so peak memory is O(block * num_cols). Ties go to the lower column index,
  as `lax.top_k` does. Returns (values [num_rows, k], indices [num_rows, k] int32), best first.
  """
  block = max(1, min(block, num_rows))
  num_blocks = math.ceil(num_rows / block)
  rows = jnp.arange(num_blocks * block, dtype=jnp.int32).reshape(num_blocks, block)
  rows = jnp.minimum(rows, num_rows - 1)  # padding rows repeat the last row and are dropped

  def one_block(r):
    return jax.lax.top_k(score_rows(r), k)

  values, indices = jax.lax.map(one_block, rows)
  return (values.reshape(-1, k)[:num_rows], indices.reshape(-1, k)[:num_rows].astype(jnp.int32))


def _mtgnn_scores(m1_rows, m2_rows, m1, m2, alpha):
  """relu(tanh(alpha (M1 M2^T - M2 M1^T))) for the given rows: [b, d] x [N, d] -> [b, N]."""
  return jax.nn.relu(jnp.tanh(alpha * (m1_rows @ m2.T - m2_rows @ m1.T)))


def tie_break_noise(rows: jax.Array, num_cols: int) -> jax.Array:
  """A fixed pseudo-random U[0, 1) value per (row, column): [b] rows -> [b, num_cols]."""
  key = jax.random.key(0x5EED)
  return jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(key, r), (num_cols,)))(rows)


class AdaptiveGraph(nn.Module):
  """MTGNN graph constructor, sparse: A = relu(tanh(a (M1 M2^T - M2 M1^T))), top-k per row.

  M_i = tanh(a Lin_i(E_i)) with node embeddings E_1, E_2 [N, embed_dim]. Returns the edge list
  of A (N * k edges, dst-sorted); edge weights are differentiable in the embeddings. As in MTGNN,
  the selection adds `tie_noise` * U[0, 1) to the scores (many saturate to exactly 1.0 or 0.0,
  and plain top-k would then always favour low node indices); the noise here is a fixed
  function of (row, column) (`tie_break_noise`), so evaluation is deterministic and needs no rng.

  Selection vs weights. Choosing the k columns of each row scores all N^2 pairs (in row blocks,
  memory O(N * block)); the weights of the chosen edges cost O(N * k). `refresh` says how often
  the selection is redone:
    refresh = 1: MTGNN exactly, the selection is recomputed from the current embeddings on every
      call (training and evaluation); no state.
    refresh = R > 1: the selection is state in the `graph` collection (`src` [N * k] int32, the
      kept column of each edge, rows in order, and a `step` counter), like `KNNHypergraph`: in
      training (`update=True`, collection mutable) it is rebuilt from the current embeddings on
      every call whose counter is a multiple of R (0, R, 2R, ...) via `lax.cond`; evaluation
      only reads it.
  Either way the weights of the selected edges, A[dst, src], are recomputed on every call from
  the current embeddings, so E_1, E_2 and Lin_1, Lin_2 get gradients on every step.
  """

  num_nodes: int
  top_k: int = MTGNN_TOP_K
  embed_dim: int = 40
  alpha: float = 3.0
  tie_noise: float = 0.01
  block: int = 1024
  refresh: int = 1

  def node_factors(self) -> tuple[jax.Array, jax.Array]:
    """(M1, M2): [N, embed_dim] each."""
    init = nn.initializers.normal(1.0)
    e1 = self.param("emb1", init, (self.num_nodes, self.embed_dim))
    e2 = self.param("emb2", init, (self.num_nodes, self.embed_dim))
    m1 = jnp.tanh(self.alpha * nn.Dense(self.embed_dim, name="lin1")(e1))
    m2 = jnp.tanh(self.alpha * nn.Dense(self.embed_dim, name="lin2")(e2))
    return m1, m2

  def select(self, m1: jax.Array, m2: jax.Array) -> jax.Array:
    """The top-k columns of every row of A (+ tie noise), without gradients: m1, m2 [N, d] ->
    src [N * k] int32, row-major, so edge e runs src[e] -> row e // k."""
    k = min(self.top_k, self.num_nodes)
    s1, s2 = jax.lax.stop_gradient(m1), jax.lax.stop_gradient(m2)

    def selection_scores(rows):
      scores = _mtgnn_scores(s1[rows], s2[rows], s1, s2, self.alpha)
      return scores + self.tie_noise * tie_break_noise(rows, self.num_nodes)

    return blockwise_top_k(selection_scores, self.num_nodes, k, self.block)[1].reshape(-1)

  @nn.compact
  def __call__(self, update: bool = False) -> EdgeList:
    if self.refresh < 1:
      raise UserError(f"graph_refresh: must be >= 1 training steps, got {self.refresh}")
    m1, m2 = self.node_factors()
    if self.refresh == 1:
      src = self.select(m1, m2)
    else:  # the selection is state; the destinations never change (k edges per row, in order)
      src_var = self.variable("graph", "src", lambda: self.select(m1, m2))
      step = self.variable("graph", "step", lambda: jnp.zeros((), jnp.int32))
      if update and not self.is_initializing():
        src_var.value = jax.lax.cond(
          step.value % self.refresh == 0, lambda: self.select(m1, m2), lambda: src_var.value
        )
        step.value = step.value + 1
      src = src_var.value
    dst = jnp.repeat(jnp.arange(self.num_nodes, dtype=jnp.int32), min(self.top_k, self.num_nodes))
    return EdgeList(
      src, dst, edge_weights(m1, m2, src, dst, self.alpha), num_nodes=self.num_nodes, dst_sorted=True
    )


def edge_weights(m1: jax.Array, m2: jax.Array, src: jax.Array, dst: jax.Array, alpha: float) -> jax.Array:
  """MTGNN weights of given edges, A[dst, src] = relu(tanh(a (m1_dst . m2_src - m2_dst . m1_src))).

  m1, m2: [N, d]; src, dst: [E] int. Returns [E], differentiable in m1 and m2; O(E d).
  """
  dots = jnp.sum(m1[dst] * m2[src] - m2[dst] * m1[src], axis=-1)
  return jax.nn.relu(jnp.tanh(alpha * dots))


def knn(z: jax.Array, k: int, block: int) -> jax.Array:
  """k nearest neighbours (Euclidean) of every row of z, the row itself always first.

  z: [N, d]. Returns [N, k] int32 ordered by distance (self at column 0; ties to lower index).
  """
  n = z.shape[0]
  if not 1 <= k <= n:
    raise UserError(f"hyperedge_size: must be in [1, num_nodes={n}], got {k}")
  sq = jnp.sum(z * z, axis=-1)

  def neg_dist(rows):
    d2 = sq[rows][:, None] + sq[None, :] - 2.0 * z[rows] @ z.T
    d2 = jnp.maximum(d2, 0.0)
    d2 = jnp.where(rows[:, None] == jnp.arange(n)[None, :], -1.0, d2)  # self first, always
    return -d2

  return blockwise_top_k(neg_dist, n, k, block)[1]


def dedup_hyperedges(members: jax.Array) -> jax.Array:
  """Validity mask that keeps the first (lowest index) copy of every distinct member set.

  members: [M, k] int; two rows are duplicates when they hold the same set of nodes. Fixed shape,
  O(M log M): rows are sorted, then lexicographically ordered (stable), then compared with their
  predecessor. Returns [M] bool.
  """
  sets = jnp.sort(members, axis=1)
  order = jnp.lexsort(tuple(sets[:, j] for j in reversed(range(sets.shape[1]))))
  ordered = sets[order]
  same_as_prev = jnp.concatenate([jnp.zeros((1,), bool), jnp.all(ordered[1:] == ordered[:-1], axis=1)])
  return jnp.zeros(members.shape[0], bool).at[order].set(~same_as_prev)


def knn_incidence(z: jax.Array, k: int, block: int) -> Incidence:
  """The released STH-SepNet hypergraph: hyperedge i = the k nearest neighbours of node i in z
  (itself included), membership 1, duplicate member sets removed (their slots get weight 0).

  z: [N, d]; no gradient reaches z (the selection is discrete and the weights are constant), as
  in the released code, which builds H from detached NumPy. Returns an `Incidence` of N * k slots.
  """
  members = knn(jax.lax.stop_gradient(z), k, block)
  valid = dedup_hyperedges(members)
  return incidence_from_members(members, jnp.broadcast_to(valid[:, None], members.shape).astype(z.dtype))


class KNNHypergraph(nn.Module):
  """Adaptive hypergraph: hyperedge i = the k nearest neighbours of node i (itself included).

  Nodes live in a learned space Z = tanh(a Lin(E)), E [N, embed_dim]. The discrete part, the
  member lists [N, k] and the duplicate mask [N], is state in the `graph` collection, together
  with a step counter: in training (`update=True`, collection mutable) it is rebuilt from the
  current Z on every call whose counter is a multiple of `refresh` (0, refresh, 2 refresh, ...),
  via `lax.cond`; evaluation only reads it. The membership weights are differentiable:
  H[v, e] = k softmax_{v in e}(-|z_v - z_e| / tau), tau a learned temperature (init sqrt(d)),
  and 0 for duplicate hyperedges. So Lin, E and tau all receive gradients.
  """

  num_nodes: int
  hyperedge_size: int = 3
  embed_dim: int = 40
  alpha: float = 3.0
  refresh: int = 100
  block: int = 1024

  @nn.compact
  def __call__(self, update: bool = False) -> Incidence:
    if self.refresh < 1:
      raise UserError(f"hypergraph_refresh: must be >= 1 training steps, got {self.refresh}")
    emb = self.param("emb", nn.initializers.normal(1.0), (self.num_nodes, self.embed_dim))
    z = jnp.tanh(self.alpha * nn.Dense(self.embed_dim, name="lin")(emb))
    log_tau = self.param("log_temperature", nn.initializers.constant(0.5 * math.log(self.embed_dim)), ())
    k = self.hyperedge_size

    def build():
      members = knn(jax.lax.stop_gradient(z), k, self.block)
      return members, dedup_hyperedges(members)

    members = self.variable("graph", "members", lambda: build()[0])
    valid = self.variable("graph", "valid", lambda: dedup_hyperedges(members.value))
    step = self.variable("graph", "step", lambda: jnp.zeros((), jnp.int32))
    if update and not self.is_initializing():
      members.value, valid.value = jax.lax.cond(
        step.value % self.refresh == 0, build, lambda: (members.value, valid.value)
      )
      step.value = step.value + 1

    m = members.value
    dist = jnp.sqrt(jnp.sum((z[m] - z[:, None, :]) ** 2, axis=-1) + 1e-12)  # [N, k], to the centre
    weights = k * jax.nn.softmax(-dist / jnp.exp(log_tau), axis=-1)
    weights = weights * valid.value[:, None].astype(weights.dtype)
    return incidence_from_members(m, weights)
