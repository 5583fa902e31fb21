"""Dropout-mask cost on this device: `jax.random.bernoulli` vs stjax's packed 16-bit masks.

    python benchmarks/dropout_masks.py [--shape=8,4,207,207] [--rate=0.1] [--steps=15]

Prints the median time of each (jit, after warm-up, device-synchronised) and their ratio; the
default shape is one ST-LLM attention-probability tensor (B 8, 4 heads, 207 x 207 nodes).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from stjax.models.dropout import keep_mask


def median_ms(fn, key, steps: int) -> float:
  fn(key).block_until_ready()
  times = []
  for i in range(steps):
    start = time.perf_counter()
    fn(jax.random.fold_in(key, i)).block_until_ready()
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="8,4,207,207", help="mask shape, comma-separated")
  parser.add_argument("--rate", type=float, default=0.1, help="drop rate")
  parser.add_argument("--steps", type=int, default=15, help="timed calls (median reported)")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  key = jax.random.key(0)
  bernoulli = median_ms(jax.jit(lambda k: jax.random.bernoulli(k, 1.0 - args.rate, shape)), key, args.steps)
  packed = median_ms(jax.jit(lambda k: keep_mask(k, args.rate, shape)), key, args.steps)
  print(f"mask {shape}, rate {args.rate}, {jax.devices()[0].platform}: bernoulli {bernoulli:.2f} ms, "
        f"packed 16-bit {packed:.2f} ms, ratio {packed / bernoulli:.2f}")


if __name__ == "__main__":
  main()
