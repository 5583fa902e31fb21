"""STH-SepNet spatial stream (MTGNN style) on index-list graphs.

    x [B, T_in, N, C_in] -> [B, N, T, C] -> start Dense(C_in -> residual) ; skip0 (over all T)
    layer l = 1..L:  gated dilated inception (kernels 2,3,6,7): tanh(filter) * sigmoid(gate)
                     skip += Dense over the remaining time window
                     x1 = MixProp(x, A) + MixProp(x, A^T)        (adaptive or static graph)
                     x2 = HGAT/HGCN(x, adaptive KNN hypergraph)
                     x  = gamma_l x1 + (1 - gamma_l) x2 + residual (cropped)  -> LayerNorm
    skipE -> relu -> Dense(end) -> relu -> Dense(T_out * C_out) -> [B, T_out, N, C_out]

Everything is O(N * (k + hyperedge_size)) per time step and channel; no N x N array exists. The
discrete parts (top-k edges, KNN hyperedges) are re-selected every graph_refresh /
hypergraph_refresh training steps (all pairs, in row blocks); their weights train every step.

`spatial_variant = "released"` is the released code's stream (stjax.models.sth_sepnet.released):
one gamma shared by all layers, the binary KNN hypergraph rebuilt on every call, and the released
HGAT (time steps as features, softmax over all nodes, per-call random weights).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from stjax.graph import AdaptiveGraph, EdgeList, HypergraphAttention, HypergraphConv, KNNHypergraph, MixProp
from stjax.kernels.broadcast import over_leading
from stjax.layers.dropout import Dropout
from stjax.models.backbones.decoder import remat_policy
from stjax.models.sth_sepnet.released import ReleasedHypergraph, ReleasedHypergraphAttention

INCEPTION_KERNELS = (2, 3, 6, 7)


def receptive_field(num_layers: int, kernels: Sequence[int] = INCEPTION_KERNELS) -> int:
  """Time steps one output sees with dilation 1: 1 + layers * (max kernel - 1)."""
  return 1 + num_layers * (max(kernels) - 1)


class DilatedInception(nn.Module):
  """MTGNN dilated inception: parallel VALID convs over time (kernels 2, 3, 6, 7), each cropped to
  the shortest output, concatenated.

  Written as Dense layers over time windows rather than `nn.Conv` (same maths, much faster XLA
  compiles on CPU): the branch with kernel k is a Dense over the last k (dilated) taps of the
  window that ends at each output step. x: [B, N, T, C] -> [B, N, T - (max k - 1) d, features].
  """

  features: int
  kernels: Sequence[int] = INCEPTION_KERNELS
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    span = max(self.kernels)
    length = x.shape[2] - (span - 1) * self.dilation
    taps = jnp.stack(
      [x[:, :, j * self.dilation : j * self.dilation + length] for j in range(span)], axis=-2
    )  # [B, N, L, span, C]
    per = self.features // len(self.kernels)
    outs = [
      nn.Dense(per, name=f"conv_{k}")(taps[..., span - k :, :].reshape(taps.shape[:3] + (-1,)))
      for k in self.kernels
    ]
    return jnp.concatenate(outs, axis=-1)


class NodeLayerNorm(nn.Module):
  """MTGNN LayerNorm: statistics over (N, T, C) of each sample, affine per (node, step, channel).

  x: [B, N, T, C] -> same shape.
  """

  epsilon: float = 1e-5
  leading_sum: str = "xla"  # kernel summing the affine's gradient over the batch (stjax.kernels).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2, 3), keepdims=True)
    scale = self.param("scale", nn.initializers.ones, x.shape[1:])
    bias = self.param("bias", nn.initializers.zeros, x.shape[1:])
    lead = x.shape[:1]
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * over_leading(
      scale, lead, self.leading_sum
    ) + over_leading(bias, lead, self.leading_sum)


def _over_window(features: int, name: str, parent=None):
  """MTGNN's Conv(kernel=(1, L)) over the whole remaining window = Dense over (L * C)."""
  dense = nn.Dense(features, name=name) if parent is None else nn.Dense(features, name=name, parent=parent)
  return lambda x: dense(x.reshape(x.shape[0], x.shape[1], -1))


class SpatialStream(nn.Module):
  """x: [B, T_in, N, C_in] -> ([B, T_out, N, C_out], logs).

  Attributes:
    config: the STH-SepNet module config (`STHSepNetConfig`): the spatial fields (`num_layers`,
      channels, `node_dim`, `tanh_alpha`, `top_k`, MixProp depth and beta, hypergraph fields,
      `gamma_init`, dropouts, `graph_block`, `graph_refresh`) are read from it.
    num_nodes, output_len, out_channels: N, T_out, C_out.
    static_graph: an `EdgeList` (the dataset adjacency) for the static variant: one MixProp on it
      replaces the two MixProps on the adaptive graph; None = adaptive graph.
    leading_sum: the leading-sum kernel of the per-node LayerNorm affine (`stjax.kernels`).

  Meaning of the config fields: `use_hypergraph` False = x1 only (GNN-only variant, the released
  Bike runs); `hypergraph_conv` "hgat" (released default) | "hgcn"; `gamma_init` initial gamma of
  every layer (1 = pairwise only, 0 = hypergraph only); `hypergraph_refresh` training steps
  between rebuilds of the KNN hyperedges; `graph_refresh` training steps between re-selections
  of the adaptive graph's top-k edges (1 = MTGNN, every call; 0 = the same as
  hypergraph_refresh). The edge weights are recomputed from the embeddings on every call.
  """

  config: Any
  num_nodes: int
  output_len: int
  out_channels: int
  static_graph: EdgeList | None = None
  leading_sum: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (forecast [B, T_out, N, C_out], logs: {"gamma": mean gamma} when mixed)."""
    cfg, det = self.config, not train
    logs = {}
    b, t, n, _ = x.shape
    x = jnp.transpose(x, (0, 2, 1, 3))  # [B, N, T, C_in]
    rf = receptive_field(cfg.num_layers)
    if t < rf:  # MTGNN left-pads short inputs with zeros up to the receptive field
      x = jnp.pad(x, ((0, 0), (0, 0), (rf - t, 0), (0, 0)))
    skip = _over_window(cfg.skip_channels, "skip_0")(Dropout(cfg.spatial_dropout)(x, deterministic=det))
    x = nn.Dense(cfg.residual_channels, name="start")(x)

    if self.static_graph is None:
      graph = AdaptiveGraph(
        n,
        cfg.top_k,
        cfg.node_dim,
        cfg.tanh_alpha,
        block=cfg.graph_block,
        refresh=cfg.graph_refresh or cfg.hypergraph_refresh,
        name="adaptive_graph",
      )(update=train)
    else:
      graph = self.static_graph
    released = cfg.spatial_variant == "released"
    incidence = shared_gamma = None
    if cfg.use_hypergraph and released:
      incidence = ReleasedHypergraph(
        n, cfg.hyperedge_size, cfg.node_dim, cfg.tanh_alpha, cfg.graph_block, name="hypergraph"
      )()
      shared_gamma = self.param("gamma", nn.initializers.constant(cfg.gamma_init), ())
    elif cfg.use_hypergraph:
      incidence = KNNHypergraph(
        n,
        cfg.hyperedge_size,
        cfg.node_dim,
        cfg.tanh_alpha,
        cfg.hypergraph_refresh,
        cfg.graph_block,
        name="hypergraph",
      )(update=train)

    # Each layer's gathers over edges and hyperedges ([B, N, k, T, C] per MixProp hop) dominate the
    # step's memory: `config.model.remat` recomputes them in the backward, layer by layer. The lifted
    # function creates its modules in this module's scope, so parameter names do not change.
    policy = remat_policy(cfg.remat)
    layer = (
      _spatial_layer if policy is None else nn.remat(_spatial_layer, policy=policy, static_argnums=(6, 7))
    )
    for i in range(cfg.num_layers):
      x, skip, gamma = layer(self, x, skip, graph, incidence, shared_gamma, i, det)
      if gamma is not None:
        logs["gamma"] = logs.get("gamma", 0.0) + gamma / cfg.num_layers

    skip = skip + _over_window(cfg.skip_channels, "skip_end")(x)
    y = jax.nn.relu(nn.Dense(cfg.end_channels, name="end_1")(jax.nn.relu(skip)))
    y = nn.Dense(self.output_len * self.out_channels, name="end_2")(y)  # [B, N, T_out * C_out]
    y = y.reshape(b, n, self.output_len, self.out_channels)
    return jnp.transpose(y, (0, 2, 1, 3)), logs


def _spatial_layer(mdl: SpatialStream, x, skip, graph, incidence, shared_gamma, i: int, det: bool):
  """Layer i of `mdl` (its modules named as its own): x [B, N, T, C], skip [B, N, S] ->
  (x [B, N, T - 6, C], skip, this layer's gamma or None when there is no hypergraph)."""
  cfg = mdl.config
  residual = x
  gated = jnp.tanh(DilatedInception(cfg.conv_channels, name=f"filter_{i}", parent=mdl)(x)) * jax.nn.sigmoid(
    DilatedInception(cfg.conv_channels, name=f"gate_{i}", parent=mdl)(x)
  )
  x = Dropout(cfg.spatial_dropout, parent=mdl)(gated, deterministic=det)
  skip = skip + _over_window(cfg.skip_channels, f"skip_{i + 1}", parent=mdl)(x)

  def mixprop(name):
    return MixProp(
      cfg.residual_channels, cfg.mixprop_depth, cfg.mixprop_beta, node_axis=1, name=name, parent=mdl
    )

  x1 = mixprop(f"mixprop_{i}")(x, graph)
  if mdl.static_graph is None:
    x1 = x1 + mixprop(f"mixprop_t_{i}")(x, graph.transpose())
  gamma = None
  if incidence is not None:
    name = f"hypergraph_conv_{i}"
    if cfg.spatial_variant == "released":
      conv = ReleasedHypergraphAttention(cfg.hypergraph_dropout, name=name, parent=mdl)
    elif cfg.hypergraph_conv == "hgat":
      conv = HypergraphAttention(
        cfg.residual_channels, cfg.hypergraph_dropout, node_axis=1, name=name, parent=mdl
      )
    else:
      conv = HypergraphConv(cfg.residual_channels, node_axis=1, name=name, parent=mdl)
    x2 = conv(x, incidence, deterministic=det)
    gamma = (
      shared_gamma
      if shared_gamma is not None
      else mdl.param(f"gamma_{i}", nn.initializers.constant(cfg.gamma_init), ())
    )
    x = gamma * x1 + (1.0 - gamma) * x2
  else:
    x = x1
  x = x + residual[:, :, -x.shape[2] :]
  x = NodeLayerNorm(leading_sum=mdl.leading_sum, name=f"norm_{i}", parent=mdl)(x)
  return x, skip, gamma
