"""Dropout-mask cost on this device: `jax.random.bernoulli` vs stjax's packed 16-bit masks.

    python benchmarks/dropout_masks.py [--shape=8,4,207,207] [--rate=0.1] [--steps=15]

Prints the median time of each (jit, after warm-up, device-synchronised, interleaved) and their ratio; the
default shape is one ST-LLM attention-probability tensor (B 8, 4 heads, 207 x 207 nodes).
"""

from __future__ import annotations

import argparse
import statistics

import jax

from stjax.layers.dropout import keep_mask
from stjax.perf import bench


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="8,4,207,207", help="mask shape, comma-separated")
  parser.add_argument("--rate", type=float, default=0.1, help="drop rate")
  parser.add_argument("--steps", type=int, default=15, help="timed calls (median reported)")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  fns = {
    "bernoulli": jax.jit(lambda k: jax.random.bernoulli(k, 1.0 - args.rate, shape)),
    "packed": jax.jit(lambda k: keep_mask(k, args.rate, shape)),
  }
  keys = [jax.random.key(i) for i in range(args.steps + 1)]
  times = bench.interleaved_times(
    {n: (lambda i, f=f: f(keys[i]).block_until_ready()) for n, f in fns.items()},
    len(keys),
    args.steps,
    warmup=1,
  )
  bernoulli, packed = (1e3 * statistics.median(times[n]) for n in ("bernoulli", "packed"))
  print(
    f"mask {shape}, rate {args.rate}, {jax.devices()[0].platform}: bernoulli {bernoulli:.2f} ms, "
    f"packed 16-bit {packed:.2f} ms, ratio {packed / bernoulli:.2f}"
  )


if __name__ == "__main__":
  main()
