"""Time and memory of one STH-SepNet spatial-stream forward+backward as N grows.

    python benchmarks/spatial_scaling.py [--nodes 1000,4000,8600] [--batch 1] [--input_len 24]
        [--steps 3] [--warmup 1] [--out docs/spatial_scaling.md]

For each N: the paper's spatial stream (3 gated dilated-inception layers, MixProp depth 2 on the
top-20 adaptive graph and its transpose, HGAT on the k=3 KNN hypergraph, gamma mix, skips) on
synthetic inputs [B, T_in, N, 1] -> [B, T_out = T_in, N, 1]; one jitted step = MSE forward +
gradient w.r.t. all parameters + graph state update (training mode). Reports the median
step time after warm-up and XLA's compiled memory analysis (arguments + outputs + temporaries -
aliased), and writes a markdown table. Linear growth in N is the claim under test.

The discrete graph selections (top-20 adaptive edges, KNN hyperedges; all N^2 pairs in row
blocks) run only on steps whose counter is a multiple of graph_refresh / hypergraph_refresh (100):
the warm-up step is step 0 and does them, the timed steps do not. Their one-off cost is reported
separately: "refresh step s" = one step with both counters reset to 0 (the same compiled step),
"top-k selection s" = the adaptive graph's selection alone (jitted, forward only).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from stjax.bench import compile_step, summarize_times, time_calls
from stjax.graph import AdaptiveGraph
from stjax.models.sth_sepnet.spatial import SpatialStream


def measure(n: int, batch: int, input_len: int, steps: int, warmup: int) -> dict:
  model = SpatialStream(num_nodes=n, output_len=input_len, out_channels=1)
  rng = np.random.default_rng(n)
  xs = [jnp.asarray(rng.normal(size=(batch, input_len, n, 1)), jnp.float32) for _ in range(2)]
  y = jnp.asarray(rng.normal(size=(batch, input_len, n, 1)), jnp.float32)
  variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, xs[0]))(jax.random.key(0))

  @jax.jit
  def step(carry, x):
    params, graph = carry

    def loss_fn(p):
      (pred, _), state = model.apply(
        {"params": p, "graph": graph}, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["graph"]
      )
      return jnp.mean((pred - y) ** 2), state["graph"]

    (loss, new_graph), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_params = jax.tree.map(lambda p, g: p - 1e-4 * g, params, grads)
    return (new_params, new_graph), loss

  carry = (variables["params"], variables["graph"])
  compiled = compile_step(step, carry, xs[0])
  times, (params, graph) = time_calls(compiled.fn, carry, xs, steps, warmup)
  if (
    warmup < 1
    or int(graph["adaptive_graph"]["step"]) % (model.graph_refresh or model.hypergraph_refresh) == 0
  ):
    raise SystemExit(
      "timed steps must not include a graph refresh: use --warmup >= 1 and warmup + steps < 100"
    )

  # One-off costs: a refresh step (both selections), and the top-k selection alone.
  reset = jax.tree.map(lambda a: a, graph)
  for name in ("adaptive_graph", "hypergraph"):
    reset[name]["step"] = jnp.zeros((), jnp.int32)
  refresh_times, _ = time_calls(compiled.fn, (params, reset), xs, 1, 0)
  selector = AdaptiveGraph(n, model.top_k, model.node_dim, model.tanh_alpha, block=model.graph_block)
  select = jax.jit(lambda p: selector.apply({"params": p}).src)
  jax.block_until_ready(select(params["adaptive_graph"]))
  start = time.perf_counter()
  jax.block_until_ready(select(params["adaptive_graph"]))
  select_s = time.perf_counter() - start

  num_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
  return {
    "nodes": n,
    "params": num_params,
    "compile_s": compiled.compile_time_s,
    "memory_mb": (compiled.memory_bytes or 0) / 2**20,
    **summarize_times(times),
    "refresh_step_s": refresh_times[0],
    "select_s": select_s,
  }


def table(rows: list[dict], args) -> str:
  base = rows[0]
  lines = [
    f"Device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), batch {args.batch}, "
    f"T_in = T_out = {args.input_len}, median of {args.steps} steps after {args.warmup} warm-up.",
    "",
    "| N | params | compile s | step s (median) | step s p10-p90 | memory MB | time / N vs first "
    "| memory / N vs first | refresh step s | top-k selection s |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    t_ratio = (r["step_time_s"] / r["nodes"]) / (base["step_time_s"] / base["nodes"])
    m_ratio = (r["memory_mb"] / r["nodes"]) / (base["memory_mb"] / base["nodes"])
    lines.append(
      f"| {r['nodes']} | {r['params']:,} | {r['compile_s']:.1f} | {r['step_time_s']:.3f} | "
      f"{r['step_time_p10_s']:.3f}-{r['step_time_p90_s']:.3f} | {r['memory_mb']:.0f} | "
      f"{t_ratio:.2f} | {m_ratio:.2f} | {r['refresh_step_s']:.3f} | {r['select_s']:.3f} |"
    )
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--nodes", default="1000,4000,8600")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--input_len", type=int, default=24)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  rows = []
  for n in (int(v) for v in args.nodes.split(",")):
    start = time.perf_counter()
    rows.append(measure(n, args.batch, args.input_len, args.steps, args.warmup))
    print(f"N={n}: {rows[-1]} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
  text = table(rows, args)
  print(text)
  if args.out:
    out = pathlib.Path(args.out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
