"""MRFFN: memory-retrieval feed-forward network (the extra FFN of ST-LINK's upper blocks).

For every token h (the block's LayerNorm-ed input to its MLP) and its attention output a:

  q = Dense(h)                                                   query, [key_dim]
  c_m = cos(q, K[m])                                             similarity to each memory key
  top-k slots S, weights w = softmax(c_S / tau)
  r = sum_{m in S} w_m V[m]                                      retrieved value, [value_dim]
  z = concat[h, r, a]
  out = sum_{e in top-2 router(z)} g_e Expert_e(z)               mixture of small FFNs

The block adds `out` to its frozen pretrained MLP. Keys K [M, key_dim] are NOT parameters: they
live in the `memory` variable collection with usage statistics, and in training only they move by
an exponential moving average towards the (stop-gradient, unit-normalised) queries that selected
them:

  K[m] <- normalise((1 - alpha) K[m] + alpha * mean_{q selected m} q / |q|)

Slots that no query selected keep their key. Optionally, a slot unused for `reseed_after`
consecutive training steps is re-seeded with one of the batch's worst-served queries (those with
the lowest best cosine). Values V and everything else learn by backprop; gradients never reach K.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax.kernels.experts import dense_experts, grouped_experts, ragged_experts, uses_grouped

MEMORY = "memory"  # the variable collection of MRFFN state


def normalize(x: jnp.ndarray, axis: int = -1, eps: float = 1e-6) -> jnp.ndarray:
  """x / max(|x|, eps) along `axis`."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def topk_retrieve(q: jnp.ndarray, keys: jnp.ndarray, values: jnp.ndarray, top_k: int, tau: float):
  """Cosine top-k retrieval.

  Args:
    q: [T, key_dim] queries; keys: [M, key_dim] (any norm); values: [M, value_dim].
    top_k: slots per query; tau: softmax temperature on cosines.
  Returns: (r [T, value_dim], idx [T, top_k] int32, weights [T, top_k], cos [T, M]).
  """
  cos = normalize(q) @ normalize(keys).T
  top_cos, idx = jax.lax.top_k(cos, top_k)
  weights = jax.nn.softmax(top_cos / tau, axis=-1)
  # sum_k w_k V[idx_k] as a [T, M] read matrix times V: a matmul forward and backward (the transpose
  # of values[idx] is a scatter-add, slow on CPU); T x M x value_dim is small next to the model.
  read = jnp.einsum("tk,tkm->tm", weights, jax.nn.one_hot(idx, keys.shape[0], dtype=weights.dtype))
  r = read @ values
  return r, idx, weights, cos


def ema_key_update(keys: jnp.ndarray, q: jnp.ndarray, idx: jnp.ndarray, alpha: float):
  """One EMA step of the keys towards the unit queries that selected them.

  Args:
    keys: [M, key_dim]; q: [T, key_dim] queries (gradient is stopped here); idx: [T, top_k].
  Returns: (new keys [M, key_dim], counts [M] = how many (query, slot) selections each slot got).
  """
  m = keys.shape[0]
  qn = normalize(jax.lax.stop_gradient(q).astype(jnp.float32))
  chosen = jax.nn.one_hot(idx, m, dtype=jnp.float32).sum(1)  # [T, M] selections of slot m by query t
  sums = chosen.T @ qn
  counts = chosen.sum(0)
  mean_q = sums / jnp.maximum(counts, 1.0)[:, None]
  moved = normalize((1.0 - alpha) * keys + alpha * mean_q)
  return jnp.where(counts[:, None] > 0, moved, keys), counts


class MemoryRetrieval(nn.Module):
  """Key-value memory with cosine top-k reads and EMA key writes.

  Attributes:
    memory_size: M slots.
    key_dim: query/key width.
    value_dim: value width.
    top_k: slots read per token.
    tau: softmax temperature over the top-k cosines.
    alpha: EMA rate of the key update.
    reseed_after: re-seed a slot unused for this many consecutive training steps (0 = never).
  """

  memory_size: int
  key_dim: int
  value_dim: int
  top_k: int = 4
  tau: float = 0.1
  alpha: float = 0.1
  reseed_after: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jnp.ndarray, *, update: bool) -> jnp.ndarray:
    """h: [..., d] -> r [..., value_dim]. `update`: apply the training-time key update."""
    if not 1 <= self.top_k <= self.memory_size:
      raise ValueError(f"memory top_k={self.top_k} must be in 1..memory_size={self.memory_size}")

    def init_keys():
      return normalize(jax.random.normal(self.make_rng("params"), (self.memory_size, self.key_dim)))

    keys = self.variable(MEMORY, "keys", init_keys)
    usage = self.variable(MEMORY, "usage", lambda: jnp.zeros((self.memory_size,), jnp.float32))
    idle = self.variable(MEMORY, "idle_steps", lambda: jnp.zeros((self.memory_size,), jnp.int32))
    values = self.param("values", nn.initializers.normal(0.02), (self.memory_size, self.value_dim))

    lead = h.shape[:-1]
    q = nn.Dense(self.key_dim, name="query", dtype=self.dtype)(h).reshape(-1, self.key_dim)
    k_fixed = jax.lax.stop_gradient(keys.value)
    r, idx, _, cos = topk_retrieve(
      q.astype(jnp.float32), k_fixed, values.astype(jnp.float32), self.top_k, self.tau
    )

    if update and not self.is_initializing():
      new_keys, counts = ema_key_update(k_fixed, q, idx, self.alpha)
      new_idle = jnp.where(counts > 0, 0, idle.value + 1)
      if self.reseed_after > 0:
        new_keys, new_idle = self._reseed(new_keys, new_idle, q, cos)
      keys.value = new_keys
      idle.value = new_idle
      # Fraction of this step's selections each slot got, as an EMA (for logging and diagnosis).
      usage.value = (1.0 - self.alpha) * usage.value + self.alpha * counts / counts.sum()
    return r.reshape(*lead, self.value_dim).astype(h.dtype)

  def _reseed(self, keys, idle, q, cos):
    """Dead slots (idle >= reseed_after) take the unit queries with the lowest best cosine."""
    dead = idle >= self.reseed_after
    n_cand = min(self.memory_size, q.shape[0])
    _, worst = jax.lax.top_k(-cos.max(axis=-1), n_cand)
    rank = jnp.clip(jnp.cumsum(dead) - 1, 0, n_cand - 1)
    seeds = normalize(jax.lax.stop_gradient(q[worst[rank]]).astype(jnp.float32))
    return jnp.where(dead[:, None], seeds, keys), jnp.where(dead, 0, idle)


class ExpertMixture(nn.Module):
  """Top-k of E small GELU FFNs with a softmax router; Switch-style load-balancing loss.

  Gates are the router probabilities of the chosen experts renormalised to sum to one. The sum
  runs through one of the exact kernels of `stjax.kernels.experts` (`kernel`: dense | grouped |
  min_rows, from `config.kernels.experts`).

  Attributes:
    num_experts: E.
    top_k: experts per token (2 in ST-LINK).
    hidden: hidden width of each expert.
    features: output width (the model width d).
    kernel: dense | grouped | min_rows | ragged (stjax.kernels.experts).
    block_rows: rows per block of the grouped kernel.
  """

  num_experts: int
  top_k: int
  hidden: int
  features: int
  dtype: jnp.dtype = jnp.float32
  kernel: str = "dense"
  block_rows: int = 256

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """z: [..., dz] -> (out [..., features], balance loss scalar).

    Balance loss = E * sum_e f_e * P_e, f_e = share of the (token, choice) assignments that went
    to expert e, P_e = mean router probability of e; it is 1 for a perfectly balanced router.
    """
    e, dz = self.num_experts, z.shape[-1]
    if not 1 <= self.top_k <= e:
      raise ValueError(f"expert top_k={self.top_k} must be in 1..num_experts={e}")
    logits = nn.Dense(e, name="router", dtype=jnp.float32)(z.astype(jnp.float32))
    probs = jax.nn.softmax(logits, axis=-1)
    top_p, top_i = jax.lax.top_k(probs, self.top_k)
    choice = jax.nn.one_hot(top_i, e, dtype=jnp.float32)  # [..., k, E]
    top_gates = top_p / top_p.sum(-1, keepdims=True)  # [..., k], sum to one

    init = nn.initializers.normal(0.02)
    w1 = self.param("w1", init, (e, dz, self.hidden))
    b1 = self.param("b1", nn.initializers.zeros, (e, self.hidden))
    w2 = self.param("w2", init, (e, self.hidden, self.features))
    b2 = self.param("b2", nn.initializers.zeros, (e, self.features))
    zc = z.astype(self.dtype)
    w1, b1, w2, b2 = (w.astype(self.dtype) for w in (w1, b1, w2, b2))
    if self.kernel == "ragged":  # per device under a mesh: the batch axis's mesh axes from the rules
      batch_axes = dict(nn.get_logical_axis_rules()).get("batch")
      out = ragged_experts(zc, top_i, top_gates.astype(self.dtype), w1, b1, w2, b2, batch_axes)
    elif uses_grouped(self.kernel, zc.size // dz, self.top_k, e, self.block_rows):
      out = grouped_experts(
        zc.reshape(-1, dz),
        top_i.reshape(-1, self.top_k),
        top_gates.astype(self.dtype).reshape(-1, self.top_k),
        w1,
        b1,
        w2,
        b2,
        self.block_rows,
      ).reshape(*z.shape[:-1], self.features)
    else:
      gates = jnp.einsum("...k,...ke->...e", top_gates, choice).astype(self.dtype)  # zero off the top-k
      out = dense_experts(zc, gates, w1, b1, w2, b2)

    frac = choice.sum(-2).reshape(-1, e).mean(0) / self.top_k
    mean_p = probs.reshape(-1, e).mean(0)
    balance = e * jnp.sum(frac * mean_p)
    return out.astype(z.dtype), balance


class MRFFN(nn.Module):
  """Memory retrieval + mixture of experts: the extra FFN of an ST-LINK block.

  Called by the GPT-2 block as `extra(h2, attn_out=a, deterministic=...) -> (out, aux_loss)`;
  the block adds `out` to its frozen pretrained MLP output. The memory updates only when not
  deterministic (training); evaluation never touches the `memory` collection.

  Attributes:
    features: d, the model width.
    memory_size, key_dim, top_k, tau, alpha, reseed_after: see `MemoryRetrieval` (values are d wide).
    num_experts, expert_top_k, expert_hidden: see `ExpertMixture`.
    aux_weight: weight of the load-balancing loss in the returned aux loss.
    expert_kernel: dense | grouped | min_rows | ragged (see `ExpertMixture`; same result).
  """

  features: int
  memory_size: int = 64
  key_dim: int = 64
  top_k: int = 4
  tau: float = 0.1
  alpha: float = 0.1
  reseed_after: int = 0
  num_experts: int = 4
  expert_top_k: int = 2
  expert_hidden: int = 256
  aux_weight: float = 0.01
  dtype: jnp.dtype = jnp.float32
  expert_kernel: str = "dense"

  @nn.compact
  def __call__(self, h: jnp.ndarray, *, attn_out: jnp.ndarray, deterministic: bool = True):
    """h, attn_out: [batch, seq, d] -> (out [batch, seq, d], weighted aux loss scalar)."""
    r = MemoryRetrieval(
      self.memory_size,
      self.key_dim,
      self.features,
      self.top_k,
      self.tau,
      self.alpha,
      self.reseed_after,
      self.dtype,
      name="memory",
    )(h, update=not deterministic)
    z = jnp.concatenate([h, r.astype(h.dtype), attn_out.astype(h.dtype)], axis=-1)
    out, balance = ExpertMixture(
      self.num_experts,
      self.expert_top_k,
      self.expert_hidden,
      self.features,
      self.dtype,
      self.expert_kernel,
      name="experts",
    )(z)
    return out, self.aux_weight * balance


def memory_stats(memory: dict) -> dict[str, jnp.ndarray]:
  """Logged scalars from a `memory` collection (all MRFFN layers together).

  - memory_active_fraction: share of slots selected in the latest training step.
  - memory_effective_fraction: exp(entropy of the usage EMA) / M, 1 = all slots used evenly.
  """
  idle = [
    leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(memory)
    if getattr(path[-1], "key", None) == "idle_steps"
  ]
  usage = [
    leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(memory)
    if getattr(path[-1], "key", None) == "usage"
  ]
  if not idle:
    return {}
  active = jnp.mean(jnp.stack([jnp.mean(i == 0) for i in idle]))
  eff = []
  for u in usage:
    p = u / jnp.maximum(u.sum(), 1e-12)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    eff.append(jnp.exp(ent) / u.shape[0])
  return {"memory_active_fraction": active, "memory_effective_fraction": jnp.mean(jnp.stack(eff))}
