"""Matmul throughput on this CPU: XLA (jax.jit) vs torch, the ST-LLM CPU-benchmark GEMMs.

    python benchmarks/gemm.py [--rows=1656] [--width=256] [--hidden=1024] [--steps=30]

rows = B 8 x 207 tokens; width/hidden = the shrunk GPT-2's 256/1024. Forward x @ W, input
gradient dy @ W^T and weight gradient x^T @ dy; prints GFLOP/s (median of --steps, jax and torch interleaved) for each.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from stjax.perf import bench


def main() -> None:
  import torch

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name, default in (("rows", 1656), ("width", 256), ("hidden", 1024), ("steps", 30)):
    parser.add_argument(f"--{name}", type=int, default=default)
  a = parser.parse_args()
  rng = np.random.default_rng(0)
  x, w, dy = (
    rng.standard_normal(s).astype(np.float32)
    for s in ((a.rows, a.width), (a.width, a.hidden), (a.rows, a.hidden))
  )
  jx, jw, jdy = map(jnp.asarray, (x, w, dy))
  tx, tw, tdy = map(torch.from_numpy, (x, w, dy))
  cases = {
    "x @ W": (lambda x, w, dy: x @ w, lambda: tx @ tw),
    "dy @ W^T": (lambda x, w, dy: dy @ w.T, lambda: tdy @ tw.T),
    "x^T @ dy": (lambda x, w, dy: x.T @ dy, lambda: tx.T @ tdy),
  }
  flops = 2 * a.rows * a.width * a.hidden
  print(
    f"GEMM {a.rows} x {a.width} x {a.hidden}, float32, torch {torch.get_num_threads()} threads (GFLOP/s):"
  )
  for name, (jax_fn, torch_fn) in cases.items():
    jitted = jax.jit(jax_fn)
    times = bench.interleaved_times(
      {"jax": lambda i: jitted(jx, jw, jdy).block_until_ready(), "torch": lambda i: torch_fn()},
      1,
      a.steps,
      warmup=3,
    )
    rate = {n: flops / statistics.median(t) / 1e9 for n, t in times.items()}
    print(f"  {name:9s} jax {rate['jax']:6.0f}   torch {rate['torch']:6.0f}")


if __name__ == "__main__":
  main()
