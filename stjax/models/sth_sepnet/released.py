"""The released code's spatial parts (`spatial_variant = "released"`), for imported official
checkpoints (stjax.convert.official_sth_sepnet; docs/reproducing_sth_sepnet.md).

- `ReleasedHypergraph`: the binary KNN hypergraph (`layer/AdaGNN.py hgypergraph_constructor`),
  rebuilt from the node embeddings on every call; params `emb` [N, d], `lin`.
- `ReleasedHypergraphAttention`: the released HGAT (`layer/HyperGNN.py`), features = time steps,
  softmax over all nodes. The released code creates it inside `forward`, so its weights are
  fresh Xavier-uniform draws on every call and in no checkpoint. Here they come, in this order,
  from the `hgat` collection (recorded weights: `hgat_collection`), else from the `dropout` rng
  (fresh per call, as released; training), else from a fixed key (evaluation without an rng:
  one deterministic draw of the released distribution).
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from stjax.errors import UserError
from stjax.graph import Incidence, knn_incidence, node_softmax_attention
from stjax.layers.dropout import Dropout

HGAT_COLLECTION = "hgat"
HGAT_WEIGHTS = ("w_self", "w_neigh", "w_concat", "attention")
_FIXED_KEY = 0x5E9  # evaluation without recorded weights or an rng


class ReleasedHypergraph(nn.Module):
  """H[v, e] = 1 when v is one of the k nearest neighbours of node e in Z = tanh(a Lin(E)),
  duplicates removed. Returns an `Incidence` (N * k slots)."""

  num_nodes: int
  hyperedge_size: int = 3
  embed_dim: int = 40
  alpha: float = 3.0
  block: int = 1024

  @nn.compact
  def __call__(self) -> Incidence:
    emb = self.param("emb", nn.initializers.normal(1.0), (self.num_nodes, self.embed_dim))
    z = jnp.tanh(self.alpha * nn.Dense(self.embed_dim, name="lin")(emb))
    return knn_incidence(z, self.hyperedge_size, self.block)


def _weight_shapes(steps: int) -> dict[str, tuple[int, int]]:
  return {
    "w_self": (steps, steps),
    "w_neigh": (steps, steps),
    "w_concat": (2 * steps, steps),
    "attention": (2 * steps, 1),
  }


class ReleasedHypergraphAttention(nn.Module):
  """x: [B, N, T, C] -> [B, N, T, C]: `node_softmax_attention` for every (sample, channel) with
  the T steps as features. Dropout on the attention weights in training (rate `dropout_rate`),
  or the recorded keep-mask `keep` [B, C, N] (1 = kept) of the `hgat` collection when present."""

  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, x: jax.Array, inc: Incidence, deterministic: bool = True) -> jax.Array:
    b, n, t, c = x.shape
    w = self._weights(t, x.dtype)
    nodes_first = jnp.transpose(x, (1, 0, 3, 2))  # [N, B, C, T]
    keep = None
    if self.has_variable(HGAT_COLLECTION, "keep"):
      kept = jnp.transpose(jnp.asarray(self.get_variable(HGAT_COLLECTION, "keep")), (2, 0, 1))  # [N, B, C]
      if kept.shape != (n, b, c):
        raise UserError(
          f"variables['hgat']: {self._where()}/keep has shape {tuple(kept.shape[i] for i in (1, 2, 0))}, "
          f"expected [B, C, N] = {(b, c, n)}"
        )
      keep = kept.astype(x.dtype) / (1.0 - self.dropout_rate)  # torch's dropout scales what it keeps
    elif not deterministic:
      keep = Dropout(self.dropout_rate)(jnp.ones((n, b, c), x.dtype), deterministic=False)
    out = node_softmax_attention(
      nodes_first, inc, w["w_self"], w["w_neigh"], w["w_concat"], w["attention"], keep
    )
    return jnp.transpose(out, (1, 0, 3, 2))

  def _where(self) -> str:
    return "/".join(self.scope.path)

  def _weights(self, steps: int, dtype) -> dict[str, jax.Array]:
    shapes = _weight_shapes(steps)
    if self.has_variable(HGAT_COLLECTION, "w_self"):
      out = {}
      for name, shape in shapes.items():
        if not self.has_variable(HGAT_COLLECTION, name):
          raise UserError(f"variables['hgat']: {self._where()}/{name} is missing")
        value = jnp.asarray(self.get_variable(HGAT_COLLECTION, name), dtype)
        if value.shape != shape:
          raise UserError(
            f"variables['hgat']: {self._where()}/{name} has shape {value.shape}, expected {shape}"
          )
        out[name] = value
      return out
    if self.has_rng("dropout"):
      key = self.make_rng("dropout")
    elif self.is_initializing():
      return {name: jnp.zeros(shape, dtype) for name, shape in shapes.items()}
    else:
      key = jax.random.fold_in(jax.random.key(_FIXED_KEY), zlib.crc32(self._where().encode()))
    keys = jax.random.split(key, len(shapes))
    xavier = nn.initializers.glorot_uniform()  # = torch xavier_uniform_ on [in, out] (symmetric bound)
    return {name: xavier(k, shape, dtype) for k, (name, shape) in zip(keys, shapes.items())}


def hgat_collection(layers: Sequence[Mapping[str, np.ndarray]], module_path: str = "spatial") -> dict:
  """Recorded released-HGAT weights -> the `hgat` collection (`variables["hgat"]`).

  layers[i]: {"w_self" [T_i, T_i], "w_neigh" [T_i, T_i], "w_concat" [2 T_i, T_i],
  "attention" [2 T_i, 1], optional "keep" [B, C, N] (the dropout keep-mask, 1 = kept; kept
  weights are scaled by 1 / (1 - rate) as torch does)} in the released layouts (layer i's HGAT
  sees T_i = T_in - 6 (i + 1) steps). Returns {module_path: {"hypergraph_conv_i": {...}}}.
  """
  out = {}
  for i, layer in enumerate(layers):
    unknown = sorted(set(layer) - set(HGAT_WEIGHTS) - {"keep"})
    if unknown or not set(HGAT_WEIGHTS) <= set(layer):
      raise UserError(
        f"hgat layer {i}: needs {', '.join(HGAT_WEIGHTS)} (+ optional keep), got {sorted(layer)}"
      )
    out[f"hypergraph_conv_{i}"] = {k: jnp.asarray(v, jnp.float32) for k, v in layer.items()}
  return {module_path: out}
