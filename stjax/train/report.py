"""The end of a run: test once with the best checkpoint; results.json, results.md and plots."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from stjax import baselines, distributed
from stjax.metrics import null_mask
from stjax.train import jsonl, optim, safe_write
from stjax.train.evaluation import evaluate_split
from stjax.train.experiment import Experiment


def finalize(exp: Experiment, checkpoints, workdir: pathlib.Path, *, steps: int, wall_time_s: float) -> dict:
  """Evaluates the best checkpoint on val and test, compares with the naive baselines, writes
  results.json, results.md and the plots; returns the results dict."""
  state, meta = checkpoints.restore_best(exp.abstract_state)
  nodes = _plot_nodes(exp.bundle.spec.num_nodes, exp.config.train.plot_nodes)
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


def _plot_nodes(num_nodes: int, count: int) -> tuple[int, ...]:
  count = max(0, min(count, num_nodes))
  return tuple(int(i) for i in np.linspace(0, num_nodes - 1, count).round()) if count else ()


def results_table(results: dict, protocol) -> str:
  """Per-horizon MAE/RMSE/MAPE of the model next to the naive baselines, as a text table."""
  rows = [("model", results["test"])] + list(results["baselines"].items())
  horizons = [h for h in protocol.report_horizons if 1 <= h <= len(results["test"]["per_horizon"])]
  cols = [("avg", lambda r, k: r[k])] + [
    (f"h{h}", lambda r, k, h=h: r["per_horizon"][h - 1][k]) for h in horizons
  ]
  lines = []
  for metric in ("mae", "rmse", "mape"):
    head = f"{metric.upper():<20}" + "".join(f"{c:>9}" for c, _ in cols)
    lines.append(head)
    for name, r in rows:
      lines.append(f"{name:<20}" + "".join(f"{get(r, metric):9.4f}" for _, get in cols))
  return "\n".join(lines)


def results_markdown(results: dict, exp: Experiment, table: str) -> str:
  t = results["test"]
  lines = [
    f"# Results: {exp.config.model.name} on {exp.bundle.dataset.name} ({exp.bundle.protocol.name} protocol)",
    "",
    "Test set, best validation checkpoint (step "
    f"{results['best_step']} of {results['steps']}; {results['wall_time_s']:.0f} s; "
    f"{results['params_trainable']:,} of {results['params_total']:,} params trainable).",
    "",
    "| model | MAE | RMSE | MAPE | WAPE |",
    "|---|---|---|---|---|",
  ]
  for name, r in [("model", t)] + list(results["baselines"].items()):
    lines.append(f"| {name} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mape']:.4f} | {r['wape']:.4f} |")
  if t.get("per_channel"):
    lines += ["", "| channel | MAE | RMSE | MAPE | WAPE |", "|---|---|---|---|---|"]
    for ch, r in t["per_channel"].items():
      lines.append(f"| {ch} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mape']:.4f} | {r['wape']:.4f} |")
  lines += [
    "",
    "Per horizon:",
    "",
    "```",
    table,
    "```",
    "",
    f"Validation MAE of the best checkpoint: {results['val']['mae']:.4f}",
    "",
  ]
  return "\n".join(lines)


def _plots(workdir: pathlib.Path, trace: dict | None, nodes: tuple[int, ...], null_rule: str) -> None:
  """predictions.png (first-horizon forecasts vs truth of a few test nodes; readings the protocol
  does not score are left out) and training_curves.png (train loss and val MAE per step)."""
  import matplotlib

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
