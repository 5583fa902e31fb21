"""Fusion of the temporal and spatial forecasts, per node (O(N) parameters and cost).

All gates map y_t, y_s: [B, T, N, C] -> [B, T, N, C]. Each node's two forecasts (its T steps)
are the gate's input; weights are shared across nodes. The released code instead mixes the node
axis with Linear(N -> N)-sized layers (N^2 parameters); see docs/sth_sepnet.md. `ReleasedGate`
is that released adaptive gate, for imported official checkpoints (fusion = "released").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


def _per_node(y: jax.Array) -> jax.Array:
  """[B, T, N, C] -> [B, N, C, T]: each node's (and channel's) forecast as one vector."""
  return jnp.transpose(y, (0, 2, 3, 1))


def _from_per_node(y: jax.Array) -> jax.Array:
  return jnp.transpose(y, (0, 3, 1, 2))


class AdaptiveGate(nn.Module):
  """g = sigmoid(Dense([y_t ; y_s]) + b_node), y = g y_t + (1 - g) y_s.

  The Dense maps a node's two T-step forecasts (2T values) to T gates; b_node is a learned bias
  per node and channel. Initially g is about 0.5 everywhere.
  """

  @nn.compact
  def __call__(self, y_t: jax.Array, y_s: jax.Array, train: bool = False) -> jax.Array:
    del train
    b, t, n, c = y_t.shape
    logits = nn.Dense(t, name="gate")(jnp.concatenate([_per_node(y_t), _per_node(y_s)], axis=-1))
    logits = logits + self.param("node_bias", nn.initializers.zeros, (n, c, 1))
    g = _from_per_node(jax.nn.sigmoid(logits))
    return g * y_t + (1.0 - g) * y_s


class AttentionGate(nn.Module):
  """y = y_t + Dense(attend(q = y_t, k = v = y_s)) over the time steps of each node.

  Every step of a node's forecast is a token of C features, embedded to `hidden` features.
  """

  hidden: int = 16

  @nn.compact
  def __call__(self, y_t: jax.Array, y_s: jax.Array, train: bool = False) -> jax.Array:
    del train
    tokens_t = jnp.transpose(y_t, (0, 2, 1, 3))  # [B, N, T, C]
    tokens_s = jnp.transpose(y_s, (0, 2, 1, 3))
    q = nn.Dense(self.hidden, name="query")(tokens_t)
    k = nn.Dense(self.hidden, name="key")(tokens_s)
    v = nn.Dense(self.hidden, name="value")(tokens_s)
    attn = jax.nn.softmax(jnp.einsum("bnth,bnsh->bnts", q, k) / jnp.sqrt(self.hidden), axis=-1)
    out = nn.Dense(y_t.shape[-1], name="out")(jnp.einsum("bnts,bnsh->bnth", attn, v))
    return y_t + jnp.transpose(out, (0, 2, 1, 3))


class LSTMGate(nn.Module):
  """An LSTM runs over each node's forecast steps with input [y_t ; y_s] (2C features); its state
  starts from the spatial forecast's last step (h0 = tanh(Dense(y_s[-1])), c0 = 0); output Dense."""

  hidden: int = 16

  @nn.compact
  def __call__(self, y_t: jax.Array, y_s: jax.Array, train: bool = False) -> jax.Array:
    del train
    b, t, n, c = y_t.shape
    seq = jnp.transpose(jnp.concatenate([y_t, y_s], axis=-1), (0, 2, 1, 3)).reshape(b * n, t, 2 * c)
    h0 = jnp.tanh(nn.Dense(self.hidden, name="init")(y_s[:, -1].reshape(b * n, c)))
    carry = (jnp.zeros_like(h0), h0)
    hs = nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="lstm")(seq, initial_carry=carry)
    out = nn.Dense(c, name="out")(hs).reshape(b, n, t, c)
    return jnp.transpose(out, (0, 2, 1, 3))


class ReleasedGate(nn.Module):
  """The released adaptive gate: g = sigmoid(Dense_N([y_t nodes ; y_s nodes])) mixes the node
  axis (kernel [2N, N]), y = clip(g y_t + (1 - g) y_s, lower, upper) per node and channel.

  lower/upper [N, C] live in the `bounds` collection: the released code clamps to the training
  data's per-node min/max (scaled units), which no checkpoint holds; init gives -inf/+inf (no
  clamp), the official importer fills them when told the values.
  """

  @nn.compact
  def __call__(self, y_t: jax.Array, y_s: jax.Array, train: bool = False) -> jax.Array:
    del train
    n, c = y_t.shape[2:]
    both = jnp.moveaxis(jnp.concatenate([y_t, y_s], axis=2), 2, -1)  # [B, T, C, 2N]
    g = jnp.moveaxis(jax.nn.sigmoid(nn.Dense(n, name="gate")(both)), -1, 2)  # [B, T, N, C]
    fused = g * y_t + (1.0 - g) * y_s
    lower = self.variable("bounds", "lower", lambda: jnp.full((n, c), -jnp.inf, jnp.float32))
    upper = self.variable("bounds", "upper", lambda: jnp.full((n, c), jnp.inf, jnp.float32))
    return jnp.minimum(jnp.maximum(fused, lower.value.astype(fused.dtype)), upper.value.astype(fused.dtype))


GATES = {"adaptive": AdaptiveGate, "attention": AttentionGate, "lstm": LSTMGate, "released": ReleasedGate}
