r"""Several seeds of one training config, and a mean +- std table of their test metrics.

    python benchmarks/seeds.py run --config=configs/sth_sepnet_metrla.py:cpu --seeds=0,1,2 \
        --workdir=runs/bert_minilm -- --config.model.backbone=bert --config.model.pretrained=FOLDER
    python benchmarks/seeds.py table runs/bert_minilm runs/bert_random
    python benchmarks/seeds.py plot runs/bert_minilm runs/bert_random --out=horizons.png
    python benchmarks/seeds.py curves runs/bert_minilm runs/bert_random --out=val_curves.png

`run` trains the config once per seed, one after the other, with the same command as a user
(`python -m stjax.train --config=CONFIG --workdir=WORKDIR/seedK --config.seed=K
--config.train.progress_bar=False OVERRIDES`); `{seed}` in an override is replaced by K (e.g. a
per-seed checkpoint folder). Each run's output goes to WORKDIR/seedK.log and its cost (wall
seconds, user + system CPU seconds of the whole process and its children, the command) to
WORKDIR/seedK.cost.json. A seed whose results.json exists is not run again, so a stopped sweep
resumes with the same command. A failed run stops the sweep (its log says why).

`table` reads WORKDIR/seed*/results.json (and the cost files) of every WORKDIR given and prints
a markdown table: one row per seed, then per WORKDIR the mean +- sample std (ddof 1) over its
seeds of the test MAE / RMSE / MAPE %, the test MAE at horizons 3 / 6 / 12 (`--horizons`), of each
channel where results.json reports channels (NYC grids: inflow, outflow) and the validation MAE,
the total wall and CPU time; below it the naive baselines (last value, historical average) on the
same test windows. `plot` draws test MAE against the horizon for every WORKDIR
(mean +- std over its seeds) with both baselines dashed. `curves` draws validation MAE against
training wall-clock minutes (metrics.jsonl `wall_s`), one line per seed, one colour per WORKDIR.
`run` prints the same table for its WORKDIR at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

from stjax.tables import markdown_table

_ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("mae", "rmse", "mape")  # test metrics summarised, in this order
BASELINES = ("last_value", "historical_average")  # naive baselines of results.json, in this order


def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def train_command(config: str, workdir: pathlib.Path, seed: int, overrides: list[str]) -> list[str]:
  """The `python -m stjax.train` command line of one seed."""
  return [
    sys.executable,
    "-m",
    "stjax.train",
    f"--config={config}",
    f"--workdir={workdir / f'seed{seed}'}",
    f"--config.seed={seed}",
    "--config.train.progress_bar=False",
  ] + [o.replace("{seed}", str(seed)) for o in overrides]


def run_seeds(config: str, seeds: list[int], workdir: pathlib.Path, overrides: list[str]) -> None:
  """Trains every seed not yet finished; writes seedK.log and seedK.cost.json beside seedK/."""
  workdir.mkdir(parents=True, exist_ok=True)
  for seed in seeds:
    if (workdir / f"seed{seed}" / "results.json").exists():
      print(f"seed {seed}: done before ({workdir / f'seed{seed}'})", flush=True)
      continue
    cmd = train_command(config, workdir, seed, overrides)
    print(f"seed {seed}: {' '.join(cmd[1:])}", flush=True)
    cpu0, wall0 = _children_cpu_s(), time.time()
    with open(workdir / f"seed{seed}.log", "w") as log:
      code = subprocess.call(cmd, cwd=_ROOT, stdout=log, stderr=subprocess.STDOUT)
    cost = {"wall_s": time.time() - wall0, "cpu_s": _children_cpu_s() - cpu0, "command": cmd[1:]}
    if code != 0:
      sys.exit(f"seed {seed}: exit status {code}; see {workdir / f'seed{seed}.log'}")
    (workdir / f"seed{seed}.cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    print(f"seed {seed}: {cost['wall_s']:.0f} s wall, {cost['cpu_s']:.0f} CPU s", flush=True)


def read_runs(workdir: pathlib.Path) -> list[dict]:
  """[{seed, test, val, steps, best_step, wall_s, cpu_s}] of the finished seeds of a workdir."""
  runs = []
  for results in sorted(workdir.glob("seed*/results.json"), key=lambda p: int(p.parent.name[4:])):
    seed = int(results.parent.name[4:])
    data = json.loads(results.read_text())
    cost_file = workdir / f"seed{seed}.cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}
    runs.append(
      {
        "seed": seed,
        "test": data["test"],
        "val": data["val"],
        "baselines": data.get("baselines", {}),
        "steps": data["steps"],
        "best_step": data.get("best_step"),
        "wall_s": cost.get("wall_s", data.get("wall_time_s")),
        "cpu_s": cost.get("cpu_s"),
      }
    )
  return runs


def _mean_std(values: list[float], digits: int) -> str:
  if len(values) < 2:
    return f"{values[0]:.{digits}f}" if values else "-"
  return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def _total(values: list[float | None]) -> str:
  return "-" if any(v is None for v in values) else f"{sum(values):.0f}"


def horizon_mae(metrics: dict, horizon: int) -> float | None:
  """The MAE at one horizon (1-based) of a results.json metrics dict; None where not reported."""
  for row in metrics.get("per_horizon", []):
    if row["horizon"] == horizon:
      return row["mae"]
  return None


def _cells(values: list[float | None], digits: int = 3, bold: bool = False) -> str:
  if any(v is None for v in values):
    return "-"
  text = _mean_std(values, digits)
  return f"**{text}**" if bold else text


def channel_mae(metrics: dict, channel: str) -> float | None:
  """The MAE of one channel (e.g. "inflow") of a results.json metrics dict; None where not reported."""
  return metrics.get("per_channel", {}).get(channel, {}).get("mae")


def _row(
  run: str,
  seed: str,
  metrics: list[dict],
  horizons: tuple[int, ...],
  channels: tuple[str, ...] = (),
  bold: bool = False,
) -> dict:
  """Table cells of one line: test MAE / RMSE / MAPE, MAE at `horizons` and of each of `channels`,
  mean +- std over `metrics`."""
  row = {"run": run, "seed": seed}
  row.update({m: _cells([t[m] for t in metrics], bold=bold) for m in METRICS})
  row.update({f"h{h}": _cells([horizon_mae(t, h) for t in metrics], bold=bold) for h in horizons})
  row.update({f"c:{c}": _cells([channel_mae(t, c) for t in metrics], bold=bold) for c in channels})
  return row


def table(workdirs: list[pathlib.Path], horizons: tuple[int, ...] = (3, 6, 12)) -> str:
  """The markdown table of every seed, the mean +- std of each workdir and, below it, the naive
  baselines on the same test windows (those of its first seed: the same data give the same numbers)."""
  columns = [
    ("run", "run"),
    ("seed", "seed"),
    ("steps", "steps (best)"),
    ("wall", "wall s"),
    ("cpu", "CPU s"),
  ]
  columns += [("mae", "test MAE"), ("rmse", "test RMSE"), ("mape", "test MAPE %")]
  columns += [(f"h{h}", f"MAE @{h}") for h in horizons]
  sweeps = [(workdir, read_runs(workdir)) for workdir in workdirs]
  for workdir, runs in sweeps:
    if not runs:
      raise SystemExit(f"{workdir}: no seed*/results.json (nothing finished yet)")
  channels = tuple(dict.fromkeys(c for _, runs in sweeps for c in runs[0]["test"].get("per_channel", {})))
  columns += [(f"c:{c}", f"MAE {c}") for c in channels] + [("val", "val MAE")]
  rows = []
  for workdir, runs in sweeps:
    for r in runs:
      rows.append(_row(workdir.name, str(r["seed"]), [r["test"]], horizons, channels))
      rows[-1].update(
        steps=f"{r['steps']} ({r['best_step']})",
        wall=_total([r["wall_s"]]),
        cpu=_total([r["cpu_s"]]),
        val=f"{r['val']['mae']:.3f}",
      )
    rows.append(
      _row(
        workdir.name,
        f"mean +- std ({len(runs)})",
        [r["test"] for r in runs],
        horizons,
        channels,
        bold=True,
      )
    )
    rows[-1].update(
      wall=_total([r["wall_s"] for r in runs]),
      cpu=_total([r["cpu_s"] for r in runs]),
      val=_mean_std([r["val"]["mae"] for r in runs], 3),
    )
    for name in BASELINES:
      if name in runs[0]["baselines"]:
        baseline = [runs[0]["baselines"][name]]
        rows.append(_row(workdir.name, name.replace("_", " "), baseline, horizons, channels))
  return markdown_table(rows, columns, fmt=lambda value, key: "" if value is None else str(value))


@contextlib.contextmanager
def _figure(out: pathlib.Path, xlabel: str, ylabel: str):
  """Axes to draw on; on leaving, labelled, gridded, with a legend, written to `out` (PNG)."""
  import matplotlib  # late: only the plots need it

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  try:
    yield ax
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
  finally:
    plt.close(fig)


def plot(workdirs: list[pathlib.Path], out: pathlib.Path) -> None:
  """Test MAE against the horizon: each workdir's mean over its seeds (band: +- std) and the naive
  baselines of the first workdir (dashed), written to `out` (PNG)."""
  with _figure(out, "horizon (steps ahead)", "test MAE") as ax:
    for workdir in workdirs:
      runs = read_runs(workdir)
      if not runs:
        raise SystemExit(f"{workdir}: no seed*/results.json (nothing finished yet)")
      hs = [row["horizon"] for row in runs[0]["test"].get("per_horizon", [])]
      if not hs:
        raise SystemExit(f"{workdir}: results.json has no per-horizon metrics to plot")
      per_seed = [[horizon_mae(r["test"], h) for h in hs] for r in runs]
      mean = [statistics.mean(col) for col in zip(*per_seed)]
      std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*per_seed)]
      line = ax.plot(
        hs, mean, marker="o", label=f"{workdir.name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
      )[0]
      ax.fill_between(
        hs,
        [m - s for m, s in zip(mean, std)],
        [m + s for m, s in zip(mean, std)],
        color=line.get_color(),
        alpha=0.2,
      )
    first = read_runs(workdirs[0])[0]
    for name, style in zip(BASELINES, ("--", ":")):
      if name in first["baselines"]:
        hs = [row["horizon"] for row in first["baselines"][name].get("per_horizon", [])]
        ax.plot(
          hs,
          [horizon_mae(first["baselines"][name], h) for h in hs],
          style,
          color="gray",
          label=name.replace("_", " "),
        )


def val_curve(run: pathlib.Path) -> tuple[list[float], list[float]]:
  """(training wall minutes, validation MAE) at each validation of one run folder's metrics.jsonl."""
  path = run / "metrics.jsonl"
  if not path.exists():
    raise SystemExit(f"{run}: no metrics.jsonl")
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  points = [(r.get("wall_s"), r["val_mae"]) for r in records if "val_mae" in r]
  if not points or any(w is None for w, _ in points):
    raise SystemExit(f"{path}: validation lines without `wall_s` (trained before it was logged?)")
  return [w / 60 for w, _ in points], [v for _, v in points]


def curves(workdirs: list[pathlib.Path], out: pathlib.Path) -> None:
  """Validation MAE against training wall-clock minutes: one line per seed, one colour per workdir,
  written to `out` (PNG)."""
  with _figure(out, "training wall-clock minutes", "validation MAE") as ax:
    for i, workdir in enumerate(workdirs):
      runs = sorted(workdir.glob("seed*/metrics.jsonl"), key=lambda p: int(p.parent.name[4:]))
      if not runs:
        raise SystemExit(f"{workdir}: no seed*/metrics.jsonl (nothing started yet)")
      for j, path in enumerate(runs):
        minutes, mae = val_curve(path.parent)
        label = f"{workdir.name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})" if j == 0 else None
        ax.plot(minutes, mae, color=f"C{i}", alpha=0.8, lw=1.2, label=label)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", help="train the config once per seed, then print the table")
  run.add_argument("--config", required=True, help="configs/X.py[:variant]")
  run.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 0,1,2")
  run.add_argument("--workdir", required=True, type=pathlib.Path, help="runs go to WORKDIR/seedK")
  run.add_argument("overrides", nargs="*", help="--config.a.b=value overrides (after --); {seed} = K")
  tab = sub.add_parser("table", help="print the mean +- std table of finished sweeps")
  tab.add_argument("workdirs", nargs="+", type=pathlib.Path)
  tab.add_argument("--horizons", default="3,6,12", help="horizons whose test MAE gets a column")
  fig = sub.add_parser("plot", help="plot test MAE per horizon of finished sweeps and the baselines")
  fig.add_argument("workdirs", nargs="+", type=pathlib.Path)
  fig.add_argument("--out", required=True, type=pathlib.Path, help="the PNG to write")
  val = sub.add_parser("curves", help="plot validation MAE against training minutes of sweeps")
  val.add_argument("workdirs", nargs="+", type=pathlib.Path)
  val.add_argument("--out", required=True, type=pathlib.Path, help="the PNG to write")
  args = parser.parse_args(argv)
  if args.command == "run":
    try:
      seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
      parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    run_seeds(args.config, seeds, args.workdir, args.overrides)
    print(table([args.workdir]))
  elif args.command in ("plot", "curves"):
    (plot if args.command == "plot" else curves)(args.workdirs, args.out)
    print(f"wrote {args.out}")
  else:
    try:
      horizons = tuple(int(h) for h in args.horizons.split(",") if h)
    except ValueError:
      parser.error(f"--horizons: expected comma-separated integers, got {args.horizons!r}")
    print(table(args.workdirs, horizons))


if __name__ == "__main__":
  main()
