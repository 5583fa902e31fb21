"""Attention forward + backward on this device: `jax.nn.dot_product_attention` vs stjax's
heads-first `attend` (dense scores, and blockwise with 512- and 256-key blocks) vs torch's
`scaled_dot_product_attention` (eager), same inputs.

    python benchmarks/attention_layouts.py [--shape=4,256,4,64] [--causal] [--dropout=0.0] [--steps=30]

--shape is batch, seq, heads, head_dim (default: one ST-LINK CPU-benchmark layer, B 4 x 64 nodes x
4 patches). Prints the median ms of value-and-gradient (w.r.t. q, k, v) of sum(out * cotangent)
for each; `jax.nn.dot_product_attention` and the blockwise path have no dropout and are skipped
when --dropout > 0.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from stjax.layers import attention
from stjax.perf import bench


def jax_runner(fn, q, k, v, cot, keys):
  """Runner(i): the jitted gradient of sum(fn(q, k, v, keys[i]) * cot) w.r.t. q, k, v, synchronised."""
  grad = jax.jit(jax.grad(lambda q, k, v, key: jnp.sum(fn(q, k, v, key) * cot), argnums=(0, 1, 2)))
  return lambda i: jax.block_until_ready(grad(q, k, v, keys[i]))


def torch_runner(q, k, v, cot, causal: bool, rate: float):
  """Runner(i): the same gradient with torch SDPA in [batch, heads, seq, head_dim], or None."""
  try:
    import torch
  except ImportError:
    return None
  qt, kt, vt = (torch.tensor(np.asarray(t)).transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
  ct = torch.tensor(np.asarray(cot)).transpose(1, 2).contiguous()

  def run(i):
    out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, dropout_p=rate, is_causal=causal)
    return torch.autograd.grad((out * ct).sum(), (qt, kt, vt))

  return run


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="4,256,4,64", help="batch,seq,heads,head_dim")
  parser.add_argument("--causal", action="store_true", help="causal mask")
  parser.add_argument("--dropout", type=float, default=0.0, help="attention-probability dropout rate")
  parser.add_argument("--steps", type=int, default=30, help="timed calls (median reported)")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  rng = np.random.default_rng(0)
  q, k, v, cot = (jnp.asarray(rng.standard_normal(shape).astype(np.float32)) for _ in range(4))
  rate, causal = args.dropout, args.causal
  keys = [jax.random.key(i) for i in range(args.steps + 2)]
  runners = {}
  if rate == 0.0:
    runners["jax.nn.dot_product_attention"] = jax_runner(
      lambda q, k, v, key: jax.nn.dot_product_attention(q, k, v, is_causal=causal), q, k, v, cot, keys
    )

  def dense(q, k, v, key):
    return attention.attend(
      q,
      k,
      v,
      causal=causal,
      dropout_rate=rate,
      deterministic=rate == 0.0,
      dropout_rng=key,
      kernel="xla_dense",
    )

  runners["stjax attend (dense scores)"] = jax_runner(dense, q, k, v, cot, keys)
  if rate == 0.0:
    for block in (512, 256):
      runners[f"stjax attend (blockwise {block})"] = jax_runner(
        lambda q, k, v, key, block=block: attention.attend(q, k, v, causal=causal, key_block=block),
        q,
        k,
        v,
        cot,
        keys,
      )
  runners["torch SDPA (eager)"] = torch_runner(q, k, v, cot, causal, rate)
  times = bench.interleaved_times({n: r for n, r in runners.items() if r}, len(keys), args.steps, warmup=2)
  print(
    f"attention fwd+bwd {shape}, causal={causal}, dropout={rate}, {jax.devices()[0].platform} (interleaved):"
  )
  for name in runners:
    print(
      f"  {name:30s} {f'{1e3 * statistics.median(times[name]):.2f} ms' if name in times else 'n/a (no torch)'}"
    )


if __name__ == "__main__":
  main()
