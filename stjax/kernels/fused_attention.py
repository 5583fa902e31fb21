"""Fused attention kernels: TPU splash attention (Pallas) and GPU cuDNN flash attention.

Both take the [batch, seq, heads, head_dim] layout of `stjax.layers.attention.attend` (k, v with
kv_heads dividing heads: grouped-query attention), scale by 1/sqrt(head_dim), and support a full or
causal mask (query i sees keys j <= i + k_len - q_len). Neither has attention dropout or arbitrary
masks: `attend` refuses such calls with one line naming the config field, never falls back.

- `splash_attention`: `jax.experimental.pallas.ops.tpu.splash_attention` (ships with JAX, so its
  version always matches; block-sparse masks, MQA form for GQA, interpret mode on any backend for
  tests). Sequences are zero-padded to the block size; padded keys get segment id 1, seen by no
  query. A Pallas call is opaque to XLA's SPMD partitioner (it would gather every operand), so
  under a mesh the kernel runs in `jax.shard_map`: batch over the batch axes, heads over the head
  axis, queries over the sequence axis (ST-LINK's node-split tokens), keys/values gathered.
- `cudnn_attention`: `jax.nn.dot_product_attention(implementation="cudnn")` (bf16/fp16 only; JAX
  partitions it itself).

XLA's cost analysis does not see inside either custom call: their calls trace under the named
scopes below, and FLOP counts use the dense program (`stjax.perf.bench.step_flops`).
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp

SPLASH_SCOPE = "stjax_splash_attention"
CUDNN_SCOPE = "stjax_cudnn_attention"
_BLOCKS = (512, 256, 128)  # splash tile sizes tried, largest first (TPU lanes: multiples of 128)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def splash_block(length: int) -> int:
  """The largest tile of `_BLOCKS` whose padding of `length` stays within 10 % of 128-padding."""
  tight = _round_up(length, 128)
  return next(b for b in _BLOCKS if _round_up(length, b) <= 1.1 * tight)


def axis_sizes() -> dict[str, int]:
  mesh = jax.sharding.get_abstract_mesh()
  return {} if mesh.empty else dict(zip(mesh.axis_names, mesh.axis_sizes))


def dividing_axes(axes, size: int, sizes: Mapping[str, int]):
  """`axes` (a mesh axis name, tuple of names or None) if the mesh splits `size` evenly over them
  (axes of size 1 dropped), else None (that dimension stays whole in the shard_map)."""
  names = tuple(a for a in ((axes,) if isinstance(axes, str) else tuple(axes or ())) if sizes.get(a, 1) > 1)
  if not names or size % math.prod(sizes[a] for a in names):
    return None
  return names if len(names) > 1 else names[0]


def splash_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  *,
  causal: bool,
  partition: Mapping[str, object] | None = None,
  interpret: bool = False,
) -> jax.Array:
  """Splash attention. q: [b, q_len, heads, d]; k, v: [b, k_len, kv_heads, d] -> [b, q_len, heads, d]
  in v's dtype (float32 accumulation and softmax).

  partition: mesh axes of q's dimensions under the active mesh, {"batch", "seq", "heads",
  "kv_heads"} (from the logical axis rules, `attend`); None or no mesh: one device.
  interpret: run the Pallas kernel in the interpreter (any backend; `config.kernels.pallas`).
  """
  sizes = axis_sizes()
  if not partition or not sizes or math.prod(sizes.values()) == 1:
    with jax.named_scope(SPLASH_SCOPE):
      return _splash_local(q, k, v, causal, interpret)
  P = jax.sharding.PartitionSpec
  b, q_len, heads, _ = q.shape
  kv_heads = k.shape[2]
  batch = dividing_axes(partition.get("batch"), b, sizes)
  seq = dividing_axes(partition.get("seq"), q_len, sizes)
  head_axes = dividing_axes(partition.get("heads"), heads, sizes)
  kv_axes = dividing_axes(partition.get("kv_heads", partition.get("heads")), kv_heads, sizes)
  if head_axes != kv_axes:  # query heads of one K/V head must stay on its device
    head_axes = kv_axes = None
  if causal and seq is not None:
    raise ValueError(
      f"attend: splash attention with a causal mask over a sequence split over mesh axis {seq!r} is not "
      "supported (each shard would need its own mask); use config.kernels.attention=xla or config.mesh.nodes=1"
    )
  q_spec, kv_spec = P(batch, seq, head_axes, None), P(batch, None, kv_axes, None)
  local = lambda q_, k_, v_: _splash_local(q_, k_, v_, causal, interpret)  # noqa: E731
  with jax.named_scope(SPLASH_SCOPE):
    return jax.shard_map(local, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False)(
      q, k, v
    )


def _splash_local(q, k, v, causal: bool, interpret: bool):
  """One device's splash attention over its shard (see `splash_attention`)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # Pallas TPU: imported on use

  b, q_len, heads, d = q.shape
  k_len, kv_heads = k.shape[1], k.shape[2]
  groups = heads // kv_heads
  bq, bk = splash_block(q_len), splash_block(k_len)
  qp, kp = _round_up(q_len, bq), _round_up(k_len, bk)
  scale = jnp.asarray(1.0 / math.sqrt(d), q.dtype)
  qh = jnp.pad((q * scale).transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, qp - q_len), (0, 0)))  # [b, h, qp, d]
  kh, vh = (jnp.pad(x.transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, kp - k_len), (0, 0))) for x in (k, v))
  mask = splash.CausalMask((qp, kp), offset=k_len - q_len) if causal else splash.FullMask((qp, kp))
  segments = None
  if kp != k_len:  # padded keys: segment 1, which no query (segment 0) sees
    segments = splash.SegmentIds(
      q=jnp.zeros((qp,), jnp.int32), kv=(jnp.arange(kp) >= k_len).astype(jnp.int32)
    )
  blocks = splash.BlockSizes(
    block_q=bq,
    block_kv=bk,
    block_kv_compute=bk,
    block_q_dkv=bq,
    block_kv_dkv=bk,
    block_kv_dkv_compute=bk,
    block_q_dq=bq,
    block_kv_dq=bk,
  )
  make = splash.make_splash_mha if groups == 1 else splash.make_splash_mqa
  kernel = make(
    splash.MultiHeadMask([mask] * groups if groups > 1 else [mask] * heads),
    block_sizes=blocks,
    head_shards=1,
    q_seq_shards=1,
    interpret=interpret,
  )
  call = lambda q_, k_, v_: kernel(q_, k_, v_, segment_ids=segments)  # noqa: E731
  if groups == 1:  # [h, qp, d] x [h, kp, d] per batch row
    out = jax.vmap(call)(qh, kh, vh)
  else:  # MQA per K/V head: [groups, qp, d] x [kp, d]
    qg = qh.reshape(b, kv_heads, groups, qp, d)
    out = jax.vmap(jax.vmap(call))(qg, kh, vh).reshape(b, heads, qp, d)
  return out[:, :, :q_len].transpose(0, 2, 1, 3).astype(v.dtype)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool, mask=None) -> jax.Array:
  """cuDNN flash attention (GPU). q: [b, q_len, heads, d]; k, v: [b, k_len, kv_heads, d]; mask:
  boolean [b|1, heads|1, q_len, k_len] or None. -> [b, q_len, heads, d]."""
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(
      f"attend: the cudnn kernel needs bfloat16 or float16 q/k/v, got {q.dtype} "
      "(set config.model.dtype=bfloat16, or config.kernels.attention=xla)"
    )
  if causal and q.shape[1] != k.shape[1]:
    raise ValueError("attend: the cudnn kernel's causal mask needs q_len == k_len (self-attention)")
  with jax.named_scope(CUDNN_SCOPE):
    return jax.nn.dot_product_attention(
      q, k, v, mask=mask, scale=1.0 / math.sqrt(q.shape[-1]), is_causal=causal, implementation="cudnn"
    )
