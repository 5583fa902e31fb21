"""Scaling curves: train-step time and peak memory vs number of nodes N and vs batch size.

    python benchmarks/scaling.py --configs=configs/st_link_pemsbay.py,configs/sth_sepnet_pems03.py \
        --nodes=200,500,1000,2000,4300,8600 --batches=8,16,32,64 --batch=8 --nodes_for_batch=207 \
        --steps=10 --out_dir=docs [--set=train.compute_dtype=bfloat16 ...]

Every point is one fresh `python -m stjax.bench` process (its last output line is the JSON result),
so one point running out of memory or time is recorded as a failure and the sweep goes on (the
node sweep of that config skips the larger N). `--time_max_nodes=N`: larger N of the node sweep
are compiled and sized but not timed (`stjax.bench --steps=0`: memory and FLOPs only), for curves
that reach sizes this machine cannot run in minutes.
Writes `<out_dir>/scaling_nodes.png`, `<out_dir>/scaling_batch.png` and `<out_dir>/scaling.json`
(all points, failures included with their error line). While it runs, the points so far are in
`<out_dir>/scaling.partial.json` (rewritten after every point), so a sweep stopped midway keeps
what it measured and an existing scaling.json is replaced only at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTIAL = "scaling.partial.json"  # the points so far of a sweep still running (or stopped midway)


def run_json(cmd: list[str], timeout: float, new_group: bool = True) -> tuple[dict, str]:
  """Runs a benchmark process from the repository root; returns (its last-line JSON or {"error": ...},
  the command with its whole stdout and stderr, for a log). On timeout the process and everything
  it started are killed; new_group=False keeps it in the caller's group (scaling.py's bench points,
  so that killing a sweep kills the point it is running too)."""
  log = "$ " + " ".join(cmd) + "\n"
  proc = subprocess.Popen(
    cmd, cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_group
  )  # its own process group, to kill as a whole
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    if new_group:
      os.killpg(proc.pid, signal.SIGKILL)
    else:
      proc.kill()
    stdout, stderr = proc.communicate()
    return {"error": f"timeout after {timeout:.0f} s"}, log + stdout + stderr
  log += stdout + stderr + f"(exit {proc.returncode})\n"
  lines = [l for l in stdout.strip().splitlines() if l.strip()]
  if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
    err = (stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {err}"}, log
  return json.loads(lines[-1]), log


def run_point(config: str, batch: int, nodes: int, steps: int, sets: list[str], timeout: int) -> dict:
  """One benchmark process; returns its JSON result or {"error": ...}."""
  cmd = [
    sys.executable,
    "-m",
    "stjax.bench",
    f"--config={config}",
    f"--batch={batch}",
    f"--nodes={nodes}",
    f"--steps={steps}",
    "--warmup=2",
    "--data_batches=0",
  ] + [f"--config.{s}" for s in sets]
  return run_json(cmd, timeout, new_group=False)[0]


def split_configs(configs: str) -> list[str]:
  """ "a.py,b.py:cpu,gpt2" -> ["a.py", "b.py:cpu,gpt2"]: a comma starts a new config only where a
  .py path follows (a variant list keeps its commas)."""
  return [c for c in re.split(r",(?=[^,:]*\.py)", configs.strip(",")) if c]


def label_of(config: str) -> str:
  return pathlib.Path(config.split(":")[0]).stem


def plot(points: list[dict], x_key: str, path: pathlib.Path, title: str):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
  for label in sorted({p["label"] for p in points}):
    ok = sorted((p for p in points if p["label"] == label and "error" not in p), key=lambda p: p[x_key])
    if not ok:
      continue
    timed = [(p[x_key], p["step_time_s"]) for p in ok if p.get("step_time_s") is not None]
    if timed:
      ax_t.plot(*zip(*timed), "o-", label=label)
    mem = [p for p in ok if p.get("peak_memory_bytes")]
    if mem:
      (line,) = ax_m.plot(
        [p[x_key] for p in mem], [p["peak_memory_bytes"] / 2**30 for p in mem], "-", label=label
      )
      for p in mem:  # filled: a step that ran; open: compiled and sized only (--time_max_nodes)
        ax_m.plot(
          p[x_key],
          p["peak_memory_bytes"] / 2**30,
          "o",
          color=line.get_color(),
          markerfacecolor=line.get_color() if p.get("step_time_s") is not None else "none",
        )
  xs = sorted({p[x_key] for p in points if "error" not in p})
  if any(p.get("step_time_s") is None and p.get("peak_memory_bytes") for p in points if "error" not in p):
    ax_m.set_title("open markers: compiled and sized, not run", fontsize=9)
  for ax, ylabel in ((ax_t, "train step time (s, median)"), (ax_m, "peak memory (GiB)")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])  # the measured values, not 2 x 10^0
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(x_key)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a sweep with no measured point has no curve to name
      ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  tmp = path.with_suffix(".tmp.png")
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--configs", required=True, help="comma-separated config files (file.py:a,b variants)")
  ap.add_argument("--nodes", default="200,500,1000,2000,4300,8600", help="N values of the node sweep")
  ap.add_argument("--batch", type=int, default=8, help="batch size of the node sweep")
  ap.add_argument("--batches", default="4,8,16,32,64", help="B values of the batch sweep")
  ap.add_argument("--nodes_for_batch", type=int, default=207, help="N of the batch sweep")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument(
    "--time_max_nodes",
    type=int,
    default=0,
    help="node-sweep points with more nodes are sized, not timed (0 = time all)",
  )
  ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
  ap.add_argument("--timeout", type=int, default=1800, help="seconds per point")
  ap.add_argument("--out_dir", default="docs")
  ap.add_argument(
    "--keep",
    default="",
    help="a scaling.json whose points of other configs are kept "
    "(to add or redo one config's curves without rerunning the rest)",
  )
  args = ap.parse_args(argv)
  out = pathlib.Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  configs = split_configs(args.configs)
  labels = {label_of(c) for c in configs}
  points = (
    [p for p in json.loads(pathlib.Path(args.keep).read_text()) if p["label"] not in labels]
    if args.keep
    else []
  )
  for config in configs:
    failed_at = None  # a larger N than one that ran out of time or memory is not tried
    for n in sorted(int(v) for v in args.nodes.split(",") if v):
      if failed_at is None:
        steps = 0 if 0 < args.time_max_nodes < n else args.steps
        r = run_point(config, args.batch, n, steps, args.set, args.timeout)
        failed_at = n if "error" in r else None
      else:
        r = {"error": f"skipped: N={failed_at} already failed"}
      points.append({"label": label_of(config), "sweep": "nodes", "nodes": n, "batch": args.batch, **r})
      save_points(points, out / PARTIAL)
      print(json.dumps(points[-1]), flush=True)
    for b in [int(v) for v in args.batches.split(",") if v]:
      r = run_point(config, b, args.nodes_for_batch, args.steps, args.set, args.timeout)
      points.append(
        {"label": label_of(config), "sweep": "batch", "nodes": args.nodes_for_batch, "batch": b, **r}
      )
      save_points(points, out / PARTIAL)
      print(json.dumps(points[-1]), flush=True)
  write_outputs(points, out, args.batch, args.nodes_for_batch)
  print(json.dumps({"points": len(points), "points_ok": sum("error" not in p for p in points)}), flush=True)


def save_points(points: list[dict], path: pathlib.Path) -> None:
  """Writes the points to path, replaced atomically."""
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(points, indent=1))
  os.replace(tmp, path)


def write_outputs(points: list[dict], out: pathlib.Path, batch: int, nodes_for_batch: int) -> None:
  """scaling.json and the two PNGs of a sweep's points; the sweep's partial JSON goes."""
  save_points(points, out / "scaling.json")
  (out / PARTIAL).unlink(missing_ok=True)
  device = next((p.get("device_kind") for p in points if "error" not in p), "?")
  plot(
    [p for p in points if p["sweep"] == "nodes"],
    "nodes",
    out / "scaling_nodes.png",
    f"step time and memory vs N (batch {batch}, {device})",
  )
  plot(
    [p for p in points if p["sweep"] == "batch"],
    "batch",
    out / "scaling_batch.png",
    f"step time and memory vs batch (N = {nodes_for_batch}, {device})",
  )


if __name__ == "__main__":
  main()
