"""MRFFN expert mixture forward + backward on this device: stjax's `dense` and `grouped` dispatch
and a `jax.lax.ragged_dot` dispatch, same routing, interleaved timing.

    python benchmarks/expert_dispatch.py [--tokens=1024] [--dz=768] [--hidden=256] [--features=256]
        [--experts=4] [--top_k=2] [--block_rows=256] [--steps=30]

Defaults: one ST-LINK CPU-benchmark MRFFN layer (B 4 x 64 nodes x 4 patches = 1024 tokens,
z = [h, r, a] of width 3 x 256). Prints the median ms of value-and-gradient (w.r.t. z and all
expert weights) of sum(out * cotangent) per dispatch and the largest gradient difference to
`grouped`.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from stjax.kernels.experts import dense_experts, grouped_experts
from stjax.perf import bench


def ragged_experts(z, top_i, gates, w1, b1, w2, b2):
  """The same sum with the (token, expert) pairs sorted by expert and `jax.lax.ragged_dot`."""
  t, k = top_i.shape
  e = w1.shape[0]
  flat_e = top_i.reshape(-1)
  order = jnp.argsort(flat_e)
  sizes = jnp.bincount(flat_e, length=e).astype(jnp.int32)
  e_sorted = flat_e[order]
  xs = z[order // k]
  hid = jax.nn.gelu(jax.lax.ragged_dot(xs, w1, sizes) + b1[e_sorted])
  ys = jax.lax.ragged_dot(hid, w2, sizes) + b2[e_sorted]
  pairs = jnp.zeros_like(ys).at[order].set(ys, unique_indices=True)
  return jnp.einsum("tk,tkf->tf", gates, pairs.reshape(t, k, -1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name, default in (
    ("tokens", 1024),
    ("dz", 768),
    ("hidden", 256),
    ("features", 256),
    ("experts", 4),
    ("top_k", 2),
    ("block_rows", 256),
    ("steps", 30),
  ):
    parser.add_argument(f"--{name}", type=int, default=default)
  a = parser.parse_args()
  rng = np.random.default_rng(0)
  normal = lambda *shape, scale=1.0: jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)  # noqa: E731
  z, cot = normal(a.tokens, a.dz), normal(a.tokens, a.features)
  weights = (
    normal(a.experts, a.dz, a.hidden, scale=0.02),
    normal(a.experts, a.hidden, scale=0.02),
    normal(a.experts, a.hidden, a.features, scale=0.02),
    normal(a.experts, a.features, scale=0.02),
  )
  probs = jax.nn.softmax(normal(a.tokens, a.experts), axis=-1)
  top_p, top_i = jax.lax.top_k(probs, a.top_k)
  top_gates = top_p / top_p.sum(-1, keepdims=True)
  gates = jnp.einsum("tk,tke->te", top_gates, jax.nn.one_hot(top_i, a.experts))
  dispatches = {
    "grouped": lambda z, *w: grouped_experts(z, top_i, top_gates, *w, a.block_rows),
    "dense": lambda z, *w: dense_experts(z, gates, *w),
    "ragged_dot": lambda z, *w: ragged_experts(z, top_i, top_gates, *w),
  }
  grads = {
    name: jax.jit(jax.grad(lambda z, w, f=f: jnp.sum(f(z, *w) * cot), argnums=(0, 1)))
    for name, f in dispatches.items()
  }
  ref = jax.tree.leaves(grads["grouped"](z, weights))
  diffs = {
    name: max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(g(z, weights)), ref))
    for name, g in grads.items()
  }
  runners = {name: (lambda i, g=g: jax.block_until_ready(g(z, weights))) for name, g in grads.items()}
  times = bench.interleaved_times(runners, 1, a.steps, warmup=2)
  print(
    f"experts fwd+bwd: T={a.tokens}, dz={a.dz}, H={a.hidden}, F={a.features}, top-{a.top_k} of {a.experts}, "
    f"{jax.devices()[0].platform}:"
  )
  for name, ts in times.items():
    print(f"  {name:11s} {1e3 * statistics.median(ts):8.2f} ms   max |grad - grouped| {diffs[name]:.1e}")


if __name__ == "__main__":
  main()
