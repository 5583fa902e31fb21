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
import numpy as np

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


EXPERT_DISPATCH = ("auto", "dense", "grouped")


def dense_experts(z, gates, w1, b1, w2, b2):
  """sum_e gates[..., e] * FFN_e(z) with every expert on every token, as two plain matmuls.

  The gates scale the hidden units, so the E second layers are one [E*H, F] matmul:
  sum_e g_e (gelu(z W1_e + b1_e) W2_e + b2_e) = [g_e * hid_e]_e @ [W2_e]_e + g @ b2.

  Args:
    z: [..., dz]; gates: [..., E] (zero for experts not chosen).
    w1: [E, dz, H]; b1: [E, H]; w2: [E, H, F]; b2: [E, F].
  Returns: [..., F].
  """
  e, dz, h = w1.shape
  hid = jax.nn.gelu((z @ jnp.transpose(w1, (1, 0, 2)).reshape(dz, e * h)).reshape(*z.shape[:-1], e, h) + b1)
  gated = (hid * gates[..., None]).reshape(*z.shape[:-1], e * h)
  return gated @ w2.reshape(e * h, -1) + gates @ b2


def grouped_blocks(tokens: int, top_k: int, num_experts: int, block_rows: int) -> int:
  """Blocks the grouped dispatch needs in the worst case: sum_e ceil(n_e / C) <= ceil(T k / C) + E - 1."""
  return -(-tokens * top_k // block_rows) + num_experts - 1


def grouped_experts(z, top_i, gates, w1, b1, w2, b2, block_rows: int):
  """sum_k gates[t, k] * FFN_{top_i[t, k]}(z[t]), computing only the chosen (token, expert) pairs.

  The T * k pairs are laid out by expert, each expert's run padded to a multiple of C =
  `block_rows` rows, so that every block of C rows belongs to one expert; the blocks are one batched
  matmul with each block's expert weights gathered. Padding rows read token 0 and are never read
  back, so they add nothing to outputs or gradients. Exact (same sum as the dense form, only the
  order of the k-term sum is fixed); static shapes: ceil(T k / C) + E - 1 blocks.

  Args:
    z: [T, dz]; top_i: [T, k] int chosen experts (distinct per token); gates: [T, k].
    w1: [E, dz, H]; b1: [E, H]; w2: [E, H, F]; b2: [E, F].
    block_rows: C.
  Returns: [T, F].
  """
  t, k = top_i.shape
  e = w1.shape[0]
  c = block_rows
  nb = grouped_blocks(t, k, e, c)
  flat_e = top_i.reshape(-1)  # pair p = t * k + j
  onehot = jax.nn.one_hot(flat_e, e, dtype=jnp.int32)  # [T k, E]
  rank = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)  # place of the pair in its expert's run
  counts = onehot.sum(0)
  padded = -(-counts // c) * c
  start = jnp.cumsum(padded) - padded  # first row of each expert's run
  row = start[flat_e] + rank  # [T k] distinct rows in [0, nb * C)
  row_pair = jnp.zeros((nb * c,), jnp.int32).at[row].set(jnp.arange(t * k, dtype=jnp.int32), unique_indices=True)
  row_valid = jnp.zeros((nb * c,), bool).at[row].set(True, unique_indices=True)
  block_e = jnp.minimum(jnp.searchsorted(jnp.cumsum(padded), jnp.arange(nb) * c, side="right"), e - 1)
  xs = _take_rows(z, row_pair // k, row.reshape(t, k), jnp.ones((t, k), bool)).reshape(nb, c, -1)
  hid = jax.nn.gelu(jnp.einsum("bcd,bdh->bch", xs, _take_blocks(w1, block_e)) + _take_blocks(b1, block_e)[:, None])
  ys = jnp.einsum("bch,bhf->bcf", hid, _take_blocks(w2, block_e)) + _take_blocks(b2, block_e)[:, None]
  pairs = _take_rows(ys.reshape(nb * c, -1), row, row_pair[:, None], row_valid[:, None])
  return jnp.einsum("tk,tkf->tf", gates, pairs.reshape(t, k, -1))


@jax.custom_vjp
def _take_blocks(w, block_e):
  """w[block_e]: each block's expert weights, [E, ...] -> [nb, ...]. The gradient sums the blocks of
  each expert with a one-hot matmul (XLA's transpose of a gather is a scatter-add, slow on CPU).
  A one-hot matmul in the forward as well made the expert fwd+bwd 11 % slower (57.5 vs 51.2 ms at
  the defaults of `benchmarks/expert_dispatch.py`)."""
  return w[block_e]


def _take_blocks_fwd(w, block_e):
  return w[block_e], (block_e, w.shape[0])


def _take_blocks_bwd(res, g):
  block_e, num_experts = res
  dw = jnp.einsum("be,b...->e...", jax.nn.one_hot(block_e, num_experts, dtype=g.dtype), g)
  return dw, np.zeros(block_e.shape, jax.dtypes.float0)


_take_blocks.defvjp(_take_blocks_fwd, _take_blocks_bwd)


@jax.custom_vjp
def _take_rows(x, fwd, bwd, bwd_valid):
  """x[fwd] whose transpose is also a gather: dx[i] = sum_j bwd_valid[i, j] * dy[bwd[i, j]].

  Exact when bwd lists, for every row i of x, all the rows of y that read it (rows of y read by no
  entry of bwd must get a zero cotangent; the grouped dispatch's padding rows do). XLA's default
  transpose of a gather is a scatter-add, much slower on CPU.
  """
  return x[fwd]


def _take_rows_fwd(x, fwd, bwd, bwd_valid):
  return x[fwd], (fwd, bwd, bwd_valid)


def _take_rows_bwd(res, dy):
  fwd, bwd, bwd_valid = res
  dx = jnp.sum(jnp.where(bwd_valid[..., None], dy[bwd], 0), axis=1).astype(dy.dtype)
  zero_int = lambda a: np.zeros(a.shape, jax.dtypes.float0)  # noqa: E731
  return dx, zero_int(fwd), zero_int(bwd), zero_int(bwd_valid)


_take_rows.defvjp(_take_rows_fwd, _take_rows_bwd)


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
    r, idx, _, cos = topk_retrieve(q.astype(jnp.float32), k_fixed, values.astype(jnp.float32), self.top_k,
                                   self.tau)

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


def auto_dispatch_is_dense() -> bool:
  """Whether `dispatch="auto"` runs the experts dense whatever the size: off the CPU, or on a mesh of
  several devices (the grouped dispatch sorts the (token, expert) pairs of the whole batch, which
  such a mesh cannot split: XLA replicates it on every device). On one CPU device auto is grouped
  when that has fewer rows than dense."""
  mesh = jax.sharding.get_abstract_mesh()  # the mesh the step is traced under (trainer: jax.set_mesh)
  return jax.default_backend() != "cpu" or (not mesh.empty and mesh.size > 1)


class ExpertMixture(nn.Module):
  """Top-k of E small GELU FFNs with a softmax router; Switch-style load-balancing loss.

  Gates are the router probabilities of the chosen experts renormalised to sum to one. Two exact
  implementations of the same sum (`dispatch`):
  - `dense`: all experts run on all tokens and the combine weights are zero off the top-k (E x the
    expert FLOPs of one expert per token; two large matmuls per layer, best on accelerators; see
    `dense_experts`).
  - `grouped`: only the chosen (token, expert) pairs are computed, in blocks of `block_rows` rows
    that each belong to one expert (see `grouped_experts`): about k/E of the dense FLOPs plus
    gathers. `auto` (the default) uses it on the CPU backend, outside a mesh of several devices,
    when it has fewer rows than dense (on a larger mesh the batch-wide sort would not shard).

  Attributes:
    num_experts: E.
    top_k: experts per token (2 in ST-LINK).
    hidden: hidden width of each expert.
    features: output width (the model width d).
    dispatch: dense | grouped | auto.
    block_rows: rows per block of the grouped dispatch.
  """

  num_experts: int
  top_k: int
  hidden: int
  features: int
  dtype: jnp.dtype = jnp.float32
  dispatch: str = "auto"
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
    if self._grouped(zc.size // dz):
      out = grouped_experts(zc.reshape(-1, dz), top_i.reshape(-1, self.top_k),
                            top_gates.astype(self.dtype).reshape(-1, self.top_k),
                            w1, b1, w2, b2, self.block_rows).reshape(*z.shape[:-1], self.features)
    else:
      gates = jnp.einsum("...k,...ke->...e", top_gates, choice).astype(self.dtype)  # zero off the top-k
      out = dense_experts(zc, gates, w1, b1, w2, b2)

    frac = choice.sum(-2).reshape(-1, e).mean(0) / self.top_k
    mean_p = probs.reshape(-1, e).mean(0)
    balance = e * jnp.sum(frac * mean_p)
    return out.astype(z.dtype), balance

  def _grouped(self, tokens: int) -> bool:
    """Whether this call uses the grouped dispatch (static: depends on shapes and the backend only)."""
    if self.dispatch not in EXPERT_DISPATCH:
      raise ValueError(f"expert dispatch {self.dispatch!r} is not one of {', '.join(EXPERT_DISPATCH)}")
    if self.dispatch != "auto":
      return self.dispatch == "grouped"
    if auto_dispatch_is_dense():
      return False
    rows = grouped_blocks(tokens, self.top_k, self.num_experts, self.block_rows) * self.block_rows
    return rows < tokens * self.num_experts


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
    dispatch: expert dispatch, dense | grouped | auto (see `ExpertMixture`; same result).
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
  dispatch: str = "auto"

  @nn.compact
  def __call__(self, h: jnp.ndarray, *, attn_out: jnp.ndarray, deterministic: bool = True):
    """h, attn_out: [batch, seq, d] -> (out [batch, seq, d], weighted aux loss scalar)."""
    r = MemoryRetrieval(self.memory_size, self.key_dim, self.features, self.top_k, self.tau, self.alpha,
                              self.reseed_after, self.dtype, name="memory")(h, update=not deterministic)
    z = jnp.concatenate([h, r.astype(h.dtype), attn_out.astype(h.dtype)], axis=-1)
    out, balance = ExpertMixture(self.num_experts, self.expert_top_k, self.expert_hidden, self.features,
                                 self.dtype, self.dispatch, name="experts")(z)
    return out, self.aux_weight * balance


def memory_stats(memory: dict) -> dict[str, jnp.ndarray]:
  """Logged scalars from a `memory` collection (all MRFFN layers together).

  - memory_active_fraction: share of slots selected in the latest training step.
  - memory_effective_fraction: exp(entropy of the usage EMA) / M, 1 = all slots used evenly.
  """
  idle = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(memory)
          if getattr(path[-1], "key", None) == "idle_steps"]
  usage = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(memory)
           if getattr(path[-1], "key", None) == "usage"]
  if not idle:
    return {}
  active = jnp.mean(jnp.stack([jnp.mean(i == 0) for i in idle]))
  eff = []
  for u in usage:
    p = u / jnp.maximum(u.sum(), 1e-12)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    eff.append(jnp.exp(ent) / u.shape[0])
  return {"memory_active_fraction": active, "memory_effective_fraction": jnp.mean(jnp.stack(eff))}
