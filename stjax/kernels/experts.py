"""Mixture-of-experts dispatch kernels: the same sum of the chosen experts' FFNs, computed two ways.

- `dense_experts`: every expert on every token, gates zero off the top-k; two large matmuls (best
  on accelerators).
- `grouped_experts`: only the chosen (token, expert) pairs, in blocks of rows that each belong to
  one expert (about k/E of the dense FLOPs plus gathers; best on one CPU device).
- `ragged_experts`: the chosen pairs sorted by expert and multiplied with `jax.lax.ragged_dot`
  (k/E of the dense FLOPs, no padding rows). XLA's TPU compiler lowers ragged_dot to its native
  grouped matmul (a `ragged-dot-metadata` call in the compiled HLO), so the Pallas megablox `gmm`
  (which needs 128-multiple tiles) is not used. Under a mesh it runs in `shard_map` over the batch
  axes, so each device sorts only its own rows (a global sort would be replicated).

`uses_grouped(choice, ...)` turns a resolved `config.kernels.experts` choice into one of the two
for a call's shapes (`min_rows`: grouped when it computes fewer rows than dense).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from stjax.kernels.fused_attention import axis_sizes, dividing_axes

EXPERT_KERNELS = ("dense", "grouped", "min_rows", "ragged")


def uses_grouped(choice: str, tokens: int, top_k: int, num_experts: int, block_rows: int) -> bool:
  """Whether a call with `tokens` tokens runs `grouped_experts` under the kernel `choice`."""
  if choice not in EXPERT_KERNELS:
    raise ValueError(f"expert kernel {choice!r} is not one of {', '.join(EXPERT_KERNELS)}")
  if choice != "min_rows":
    return choice == "grouped"
  return grouped_blocks(tokens, top_k, num_experts, block_rows) * block_rows < tokens * num_experts


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
  row_pair = (
    jnp.zeros((nb * c,), jnp.int32).at[row].set(jnp.arange(t * k, dtype=jnp.int32), unique_indices=True)
  )
  row_valid = jnp.zeros((nb * c,), bool).at[row].set(True, unique_indices=True)
  block_e = jnp.minimum(jnp.searchsorted(jnp.cumsum(padded), jnp.arange(nb) * c, side="right"), e - 1)
  xs = _take_rows(z, row_pair // k, row.reshape(t, k), jnp.ones((t, k), bool)).reshape(nb, c, -1)
  hid = jax.nn.gelu(
    jnp.einsum("bcd,bdh->bch", xs, _take_blocks(w1, block_e)) + _take_blocks(b1, block_e)[:, None]
  )
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


def ragged_experts(z, top_i, gates, w1, b1, w2, b2, batch_axes=None):
  """sum_k gates[..., k] * FFN_{top_i[..., k]}(z) over expert-sorted rows with `jax.lax.ragged_dot`.

  Args:
    z: [B, ..., dz]; top_i: [B, ..., k] int chosen experts; gates: [B, ..., k].
    w1: [E, dz, H]; b1: [E, H]; w2: [E, H, F]; b2: [E, F].
    batch_axes: mesh axes of the batch axis (the logical rule of "batch"); under a mesh that divides
      B the call runs per device in `shard_map`, weights replicated (their gradients summed).
  Returns: [B, ..., F].
  """
  sizes = axis_sizes()
  axes = dividing_axes(batch_axes, z.shape[0], sizes) if sizes and math.prod(sizes.values()) > 1 else None
  if axes is None:
    return _ragged_local(z, top_i, gates, w1, b1, w2, b2)
  spec, rep = jax.sharding.PartitionSpec(axes), jax.sharding.PartitionSpec()
  return jax.shard_map(
    _ragged_local, in_specs=(spec, spec, spec, rep, rep, rep, rep), out_specs=spec, check_vma=False
  )(z, top_i, gates, w1, b1, w2, b2)


def _ragged_local(z, top_i, gates, w1, b1, w2, b2):
  lead, dz, k, e = z.shape[:-1], z.shape[-1], top_i.shape[-1], w1.shape[0]
  flat_e = top_i.reshape(-1)  # pair p = token * k + j
  order = jnp.argsort(flat_e, stable=True)  # pairs grouped by expert
  token = order // k
  sorted_e = flat_e[order]
  group_sizes = jnp.bincount(flat_e, length=e).astype(jnp.int32)
  xs = z.reshape(-1, dz)[token]  # [T k, dz]
  hid = jax.nn.gelu(jax.lax.ragged_dot(xs, w1, group_sizes) + b1[sorted_e])
  ys = jax.lax.ragged_dot(hid, w2, group_sizes) + b2[sorted_e]  # [T k, F]
  weighted = ys * gates.reshape(-1)[order][:, None].astype(ys.dtype)
  out = jnp.zeros((math.prod(lead), ys.shape[-1]), ys.dtype).at[token].add(weighted)
  return out.reshape(*lead, -1)
