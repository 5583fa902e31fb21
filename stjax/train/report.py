"""The end of a run: test once with the best checkpoint; results.json, results.md and plots."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from stjax import baselines, distributed
from stjax.errors import UserError
from stjax.metrics import null_mask
from stjax.tables import markdown_table, metric_value
from stjax.train import jsonl, optim, safe_write
from stjax.train.evaluation import evaluate_split
from stjax.train.experiment import Experiment


def finalize(exp: Experiment, checkpoints, workdir: pathlib.Path, *, steps: int, wall_time_s: float) -> dict:
  """Evaluates the best checkpoint on val and test, compares with the naive baselines, writes
  results.json, results.md and the plots; returns the results dict."""
  state, meta = checkpoints.restore_best(exp.abstract_state)
  nodes = plot_nodes(exp)
  val, _ = evaluate_split(exp, state, "val")
  test, trace = evaluate_split(exp, state, "test", keep_nodes=nodes)
  n_total, n_train = optim.count_params(state.params, exp.trainable)
  results = {
    "test": test,
    "val": val,
    "baselines": {
      name: r["test"] for name, r in baselines.evaluate_baselines(exp.bundle, splits=("test",)).items()
    },
    "best_step": int(meta["step"]),
    "steps": int(steps),
    "wall_time_s": float(wall_time_s),
    "params_total": int(n_total),
    "params_trainable": int(n_train),
  }
  table = results_table(results, exp.bundle.protocol)
  if distributed.is_main_process():
    print(table, flush=True)
    safe_write.atomic_write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    safe_write.atomic_write_text(workdir / "results.md", results_markdown(results, exp, table))
    _plots(workdir, trace, nodes, exp.bundle.protocol.null_rule)
  return results


def plot_nodes(exp: Experiment) -> tuple[int, ...]:
  """The nodes predictions.png shows: `config.train.plot_node_ids` when given, else the
  `plot_nodes` busiest by their mean target in the TRAINING split (never chosen from test data)."""
  t, n = exp.config.train, exp.bundle.spec.num_nodes
  chosen = tuple(int(i) for i in t.get("plot_node_ids", ()))
  if chosen:
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
      raise UserError(f"config.train.plot_node_ids: {bad} outside 0..{n - 1}")
    return chosen
  count = max(0, min(t.plot_nodes, n))
  activity = exp.bundle.splits["train"].node_activity()
  return tuple(int(i) for i in np.argsort(-activity, kind="stable")[:count])


def results_table(results: dict, protocol) -> str:
  """Test MAE/RMSE/MAPE of the model next to the naive baselines: average, each channel where the
  protocol reports channels (e.g. inflow / outflow), and the reported horizons."""
  horizons = [h for h in protocol.report_horizons if 1 <= h <= len(results["test"]["per_horizon"])]
  channels = list(results["test"].get("per_channel", {}))
  rows = []
  for name, r in [("model", results["test"])] + list(results["baselines"].items()):
    for metric in ("mae", "rmse", "mape"):
      row = {"model": name, "metric": metric.upper(), "avg": r[metric]}
      row.update({f"c:{c}": r.get("per_channel", {}).get(c, {}).get(metric) for c in channels})
      row.update({f"h{h}": r["per_horizon"][h - 1][metric] for h in horizons})
      rows.append(row)
  rows.sort(key=lambda row: ("MAE", "RMSE", "MAPE").index(row["metric"]))  # metric by metric
  columns = [("metric", "metric"), ("model", "model"), ("avg", "avg")]
  columns += [(f"c:{c}", c) for c in channels] + [(f"h{h}", f"h{h}") for h in horizons]
  fmt = lambda v, k: f"{v:.4f}" if isinstance(v, float) else "-" if v is None else str(v)
  return markdown_table(rows, columns, fmt)


def results_markdown(results: dict, exp: Experiment, table: str) -> str:
  t = results["test"]
  metrics = [("mae", "MAE"), ("rmse", "RMSE"), ("mape", "MAPE"), ("wape", "WAPE")]
  models = [{"model": name, **r} for name, r in [("model", t)] + list(results["baselines"].items())]
  lines = [
    f"# Results: {exp.config.model.name} on {exp.bundle.dataset.name} ({exp.bundle.protocol.name} protocol)",
    "",
    "Test set, best validation checkpoint (step "
    f"{results['best_step']} of {results['steps']}; {results['wall_time_s']:.0f} s; "
    f"{results['params_trainable']:,} of {results['params_total']:,} params trainable).",
    "",
    markdown_table(models, [("model", "model")] + metrics, metric_value),
  ]
  if t.get("per_channel"):
    channels = [{"channel": ch, **r} for ch, r in t["per_channel"].items()]
    lines += ["", markdown_table(channels, [("channel", "channel")] + metrics, metric_value)]
  lines += [
    "",
    "Per horizon:",
    "",
    table,
    "",
    f"Validation MAE of the best checkpoint: {results['val']['mae']:.4f}",
    "",
  ]
  return "\n".join(lines)


def _plots(workdir: pathlib.Path, trace: dict | None, nodes: tuple[int, ...], null_rule: str) -> None:
  """predictions.png (first-horizon forecasts vs truth of a few test nodes; readings the protocol
  does not score are left out) and training_curves.png (train loss and val MAE per step)."""
  import matplotlib  # here, not at the top: the Agg backend must be chosen before pyplot loads

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if trace is not None and len(nodes):
    order = np.argsort(trace["index"])
    true = np.where(np.asarray(null_mask(trace["true"], null_rule)), trace["true"], np.nan)
    fig, axes = plt.subplots(len(nodes), 1, figsize=(12, 2.2 * len(nodes)), sharex=True, squeeze=False)
    for i, node in enumerate(nodes):
      ax = axes[i, 0]
      ax.plot(trace["index"][order], true[order, i], lw=0.8, label="truth")
      ax.plot(trace["index"][order], trace["pred"][order, i], lw=0.8, label="prediction (+1 step)")
      ax.set_ylabel(f"node {node}")
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel("test window")
    fig.tight_layout()
    try:
      safe_write.atomic_save_figure(fig, workdir / "predictions.png", dpi=100)
    finally:
      plt.close(fig)
  records = jsonl.read(workdir / "metrics.jsonl")
  if records:
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r["step"] for r in records], [r["train_loss"] for r in records], label="train loss")
    val = [r for r in records if "val_mae" in r]
    ax.plot([r["step"] for r in val], [r["val_mae"] for r in val], "o-", label="val MAE")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    try:
      safe_write.atomic_save_figure(fig, workdir / "training_curves.png", dpi=100)
    finally:
      plt.close(fig)
