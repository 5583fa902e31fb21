"""Sums over leading axes on this device: XLA's reduce vs the ones-vector matmul of
`stjax.kernels.broadcast.over_leading` (the gradient of a parameter broadcast over the batch).

    python benchmarks/leading_sums.py [--shapes=8x207x256,16x207x42x8,64x325x768] [--steps=30]

Each shape is summed over its first axis; prints the median ms of each (jit, after warm-up, interleaved).
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from stjax.perf import bench


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--shapes",
    default="8x207x256,16x207x42x8,64x325x768",
    help="comma-separated shapes (ST-LLM wpe grad, STH-SepNet LayerNorm grad, ST-LLM PEMS-BAY)",
  )
  parser.add_argument("--steps", type=int, default=30, help="timed calls (median reported)")
  args = parser.parse_args()
  reduce = jax.jit(lambda x: jnp.sum(x, axis=0))
  matmul = jax.jit(
    lambda x: jnp.tensordot(jnp.ones(x.shape[:1], x.dtype), x, axes=1, precision=jax.lax.Precision.HIGHEST)
  )
  print(f"sum over axis 0, {jax.devices()[0].platform}:")
  for text in args.shapes.split(","):
    shape = tuple(int(s) for s in text.split("x"))
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    times = bench.interleaved_times(
      {"reduce": lambda i: reduce(x).block_until_ready(), "matmul": lambda i: matmul(x).block_until_ready()},
      1,
      args.steps,
      warmup=2,
    )
    ms = {n: 1e3 * statistics.median(t) for n, t in times.items()}
    print(f"  {text:14s} reduce {ms['reduce']:8.3f} ms   ones matmul {ms['matmul']:8.3f} ms")


if __name__ == "__main__":
  main()
