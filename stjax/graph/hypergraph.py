"""Hypergraphs as incidence lists and hypergraph convolutions by segment sums.

An `Incidence` stores the non-zero entries of a weighted incidence matrix H [N, M] as three
arrays of length Z: H[node[z], edge[z]] = weight[z]. Entries with weight 0 are padding (an
invalid or duplicate hyperedge keeps its slots with weight 0 and so becomes an empty hyperedge).
Degrees are weighted: d_v = sum_e H[v, e], d_e = sum_v H[v, e]. Every operation costs
O(Z * features); no dense N x M matrix is formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from stjax.layers.dropout import Dropout


@struct.dataclass
class Incidence:
  """A weighted hypergraph: H[node[z], edge[z]] = weight[z] (duplicates add up).

  node: [Z] int32 in [0, num_nodes); edge: [Z] int32 in [0, num_edges); weight: [Z] float >= 0.
  """

  node: jax.Array
  edge: jax.Array
  weight: jax.Array
  num_nodes: int = struct.field(pytree_node=False)
  num_edges: int = struct.field(pytree_node=False)


def incidence_from_members(members: jax.Array, weights: jax.Array) -> Incidence:
  """Hyperedge e = {members[e, j]} with H[members[e, j], e] = weights[e, j].

  members: [M, k] int node ids (M hyperedges of k slots); weights: [M, k] (0 = unused slot).
  The number of nodes is taken to be M (one candidate hyperedge per node, as the KNN
  constructor produces); pass `num_nodes` explicitly via `Incidence(...)` otherwise.
  """
  m, k = members.shape
  edge = jnp.repeat(jnp.arange(m, dtype=jnp.int32), k)
  return Incidence(members.reshape(-1).astype(jnp.int32), edge, weights.reshape(-1), num_nodes=m, num_edges=m)


def node_degree(inc: Incidence) -> jax.Array:
  """d_v = sum_e H[v, e]. Returns [N]."""
  return jax.ops.segment_sum(inc.weight, inc.node, inc.num_nodes)


def edge_degree(inc: Incidence) -> jax.Array:
  """d_e = sum_v H[v, e]. Returns [M]."""
  return jax.ops.segment_sum(inc.weight, inc.edge, inc.num_edges)


def _safe_pow(d: jax.Array, p: float) -> jax.Array:
  """d ** p where d > 0, else 0 (isolated nodes and empty hyperedges contribute nothing)."""
  pos = d > 0
  return jnp.where(pos, jnp.where(pos, d, 1.0) ** p, 0.0)


def _bcast(w: jax.Array, ndim: int) -> jax.Array:
  return w.reshape((-1,) + (1,) * (ndim - 1))


def nodes_to_edges(x: jax.Array, inc: Incidence) -> jax.Array:
  """H^T X: out[e] = sum_v H[v, e] x[v]. x: [N, ...] -> [M, ...]."""
  msg = x[inc.node] * _bcast(inc.weight.astype(x.dtype), x.ndim)
  return jax.ops.segment_sum(msg, inc.edge, inc.num_edges)


def edges_to_nodes(y: jax.Array, inc: Incidence) -> jax.Array:
  """H Y: out[v] = sum_e H[v, e] y[e]. y: [M, ...] -> [N, ...]."""
  msg = y[inc.edge] * _bcast(inc.weight.astype(y.dtype), y.ndim)
  return jax.ops.segment_sum(msg, inc.node, inc.num_nodes)


def hypergraph_smooth(x: jax.Array, inc: Incidence) -> jax.Array:
  """The HGNN operator Dv^-1/2 H De^-1 H^T Dv^-1/2 X (Feng et al., 2019). x: [N, ...]."""
  dv = _safe_pow(node_degree(inc), -0.5).astype(x.dtype)
  de = _safe_pow(edge_degree(inc), -1.0).astype(x.dtype)
  e = nodes_to_edges(x * _bcast(dv, x.ndim), inc) * _bcast(de, x.ndim)
  return edges_to_nodes(e, inc) * _bcast(dv, x.ndim)


def segment_softmax(
  scores: jax.Array, segment_ids: jax.Array, num_segments: int, weight: jax.Array
) -> jax.Array:
  """Weighted softmax within segments: a_z = w_z exp(s_z) / sum_{z' in seg(z)} w_z' exp(s_z').

  scores: [Z, ...]; segment_ids, weight: [Z]. Entries with weight 0 get exactly 0; a segment
  whose weights are all 0 gets all zeros (no NaN). Differentiable in scores and weight.
  """
  w = _bcast(weight.astype(scores.dtype), scores.ndim)
  masked = jnp.where(w > 0, scores, -jnp.inf)
  peak = jax.lax.stop_gradient(jax.ops.segment_max(masked, segment_ids, num_segments))
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  z = jnp.exp(jnp.where(w > 0, scores - peak[segment_ids], -jnp.inf)) * w
  denom = jax.ops.segment_sum(z, segment_ids, num_segments)[segment_ids]
  return jnp.where(denom > 0, z / jnp.where(denom > 0, denom, 1.0), 0.0)


class HypergraphConv(nn.Module):
  """HGNN convolution: out = Dv^-1/2 H De^-1 H^T Dv^-1/2 (X Theta) + b.

  x: [..., N, ..., C] with nodes at `node_axis`; returns [..., N, ..., features].
  """

  features: int
  node_axis: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, inc: Incidence, deterministic: bool = True) -> jax.Array:
    del deterministic  # no dropout in this variant; the signature matches HypergraphAttention
    h = nn.Dense(self.features, use_bias=False, name="theta")(x)
    h = jnp.moveaxis(hypergraph_smooth(jnp.moveaxis(h, self.node_axis, 0), inc), 0, self.node_axis)
    return h + self.param("bias", nn.initializers.zeros, (self.features,), h.dtype)


class HypergraphAttention(nn.Module):
  """Hypergraph attention (HGAT): each node attends over the hyperedges that contain it.

    xw = X W;  e_m = LeakyReLU(De^-1 H^T xw)               (hyperedge features, weighted mean)
    s_vm = LeakyReLU(a_self . xw_v + a_edge . e_m)           (one score per incidence)
    alpha_vm = H[v,m] exp(s_vm) / sum_m' H[v,m'] exp(s_vm')  (softmax over v's hyperedges)
    out_v = Dense([xw_v ; sum_m alpha_vm e_m])

  The incidence weights enter the softmax, so they receive gradients. x: [..., N, ..., C] with
  nodes at `node_axis`; returns [..., N, ..., features].
  """

  features: int
  dropout_rate: float = 0.0
  negative_slope: float = 0.2
  node_axis: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, inc: Incidence, deterministic: bool = True) -> jax.Array:
    xw = jnp.moveaxis(nn.Dense(self.features, use_bias=False, name="w")(x), self.node_axis, 0)
    de = _safe_pow(edge_degree(inc), -1.0).astype(xw.dtype)
    e = nn.leaky_relu(nodes_to_edges(xw, inc) * _bcast(de, xw.ndim), self.negative_slope)
    a_self = nn.Dense(1, use_bias=False, name="att_self")(xw)[..., 0]  # [N, ...]
    a_edge = nn.Dense(1, use_bias=False, name="att_edge")(e)[..., 0]  # [M, ...]
    scores = nn.leaky_relu(a_self[inc.node] + a_edge[inc.edge], self.negative_slope)
    alpha = segment_softmax(scores, inc.node, inc.num_nodes, inc.weight)
    alpha = Dropout(self.dropout_rate)(alpha, deterministic=deterministic)
    neigh = jax.ops.segment_sum(alpha[..., None] * e[inc.edge], inc.node, inc.num_nodes)
    out = nn.Dense(self.features, name="out")(jnp.concatenate([xw, neigh], axis=-1))
    return jnp.moveaxis(out, 0, self.node_axis)


def node_softmax_attention(
  x: jax.Array,
  inc: Incidence,
  w_self: jax.Array,
  w_neigh: jax.Array,
  w_concat: jax.Array,
  attention: jax.Array,
  keep: jax.Array | None = None,
  negative_slope: float = 0.2,
) -> jax.Array:
  """The released STH-SepNet HGAT (`layer/HyperGNN.py HypergraphAttention`), on incidence lists:

    e_m   = LeakyReLU(sum_v H[v,m] x_v / (d_e(m) + 1))       (hyperedge features, raw x)
    n_v   = (sum_m H[v,m] e_m / (d_v(v) + 1)) W_neigh
    c_v   = [x_v W_self ; n_v]
    a_v   = softmax over ALL nodes v of c_v . attention     (then times `keep`, a dropout mask)
    out_v = (a_v c_v) W_concat

  x: [N, ..., F] (nodes first, features last; the released code's features are time steps);
  w_self, w_neigh [F, F']; w_concat [2F', F'']; attention [2F', 1]; keep: None or [N, ...] (the
  kept attention weights' scale, 0 where dropped). Returns [N, ..., F''].
  """
  deg_e = edge_degree(inc).astype(x.dtype)
  deg_v = node_degree(inc).astype(x.dtype)
  edges = nn.leaky_relu(nodes_to_edges(x, inc) / _bcast(deg_e + 1.0, x.ndim), negative_slope)
  neigh = edges_to_nodes(edges, inc) / _bcast(deg_v + 1.0, x.ndim)
  concat = jnp.concatenate([x @ w_self.astype(x.dtype), neigh @ w_neigh.astype(x.dtype)], axis=-1)
  weights = jax.nn.softmax((concat @ attention.astype(x.dtype))[..., 0], axis=0)  # [N, ...]
  if keep is not None:
    weights = weights * keep.astype(weights.dtype)
  return (concat * weights[..., None]) @ w_concat.astype(x.dtype)
