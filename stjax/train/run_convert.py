"""Run folders from and to other formats (the library side of `python -m stjax.convert`).

`import_st_llm_run` / `import_sth_sepnet_run`: an official checkpoint (ST-LLM `best_model.pth`,
STH-SepNet `checkpoint`) -> a stjax run folder: config.json (the model config the checkpoint
implies), checkpoints/best in the trainer's format, run.json + scaler.npz (+ graph.npz when the
data have a graph; the protocol at the checkpoint's geometry: stllm or sthsepnet; the scaler given,
or fitted on the training split of the given data only), and imported.json (source file, sha256,
geometry, what was not imported). `stjax.evaluate` and `stjax.predict` accept it like a trained run.

`export_run`: a run folder -> `model.safetensors` (every parameter and model-state leaf, named by
its path, e.g. `params/llm/h_0/attn/c_attn/kernel`), `data.safetensors` (scaler_mean, scaler_std
and the adjacency when there is one) and `config.json` (model config, the run's data facts, the
tensor index), readable with `safetensors` and `json` alone; plus `llm/` as a Hugging Face folder
when the model has params["llm"]. `fmt="official"` writes an ST-LLM run as the official
`best_model.pth` (and `scaler.json`, which the official code keeps outside its checkpoint).

Every output folder is written into a temporary sibling and renamed at the end: on any error
nothing is left at the output path.

The pieces live beside this module: `stjax.train.run_import` (scaler and data facts, the checked
state, writing an imported run) and `stjax.train.run_export` (`export_run`); their public names
are importable from here too.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from stjax.convert import official_st_llm, official_sth_sepnet
from stjax.errors import UserError
from stjax.train.config import base_config
from stjax.train.run_export import (  # noqa: F401 (public here too)
  BACKBONE_DIR,
  DATA_FILE,
  EXPORT_FORMAT,
  EXPORT_VERSION,
  MODEL_FILE,
  check_output,
  export_run,
)
from stjax.train.run_import import (  # noqa: F401 (public here too)
  check_scaler_source,
  fitted_run,
  given_scaler_run,
  parse_values,
  per_node,
  training_bounds,
  write_imported_run,
)


def import_st_llm_run(
  checkpoint_path: str | os.PathLike,
  output: str | os.PathLike,
  *,
  scaler_mean: float | None = None,
  scaler_std: float | None = None,
  data: str | None = None,
  n_head: int | None = None,
  unfrozen_layers: int | None = None,
) -> pathlib.Path:
  """Official ST-LLM checkpoint -> stjax run folder at `output` (see the module docstring).

  Args:
    checkpoint_path: the official `best_model.pth`.
    output: new (or empty) folder.
    scaler_mean, scaler_std: the official StandardScaler (mean/std of x_train[..., 0]); or
    data: the data it was trained on (a registry name such as taxi-pick, or an ST-LLM split folder):
      the scaler is fitted on its training split only, and its shape must match the checkpoint.
    n_head, unfrozen_layers: not stored in the checkpoint (see official_st_llm.model_config).
  """
  check_scaler_source(scaler_mean, scaler_std, data)
  if data is None and not (np.isfinite([scaler_mean, scaler_std]).all() and scaler_std > 0):
    raise UserError(f"--scaler-std: must be a finite number > 0 (mean {scaler_mean}, std {scaler_std})")
  check_output(output)
  imported = official_st_llm.load(checkpoint_path, n_head=n_head, unfrozen_layers=unfrozen_layers)
  g = imported.geometry
  if g.in_channels != 1:
    raise UserError(f"{checkpoint_path}: {g.input_dim} input channels; only the released 3 can be imported")
  config = base_config(imported.model_config)
  config.optim.name = "ranger"  # the official optimizer (only used if training resumes from here)
  config.optim.b1, config.optim.eps = 0.95, 1e-5
  config.data.protocol = "stllm"
  config.data.input_len, config.data.output_len = g.input_len, g.output_len
  if data is None:
    run = given_scaler_run(
      config,
      "st-llm-import",
      24 * 60 / g.steps_per_day,
      g.num_nodes,
      [scaler_mean],
      [scaler_std],
      "given (--scaler-mean/--scaler-std: the official StandardScaler of x_train[..., 0])",
    )
  else:
    run, _ = fitted_run(config, data, lambda spec: g.check_spec(spec, where=f"--data {data}"))
  provenance = {
    "format": "official ST-LLM best_model.pth (github ChenxiLiu-HNU/ST-LLM)",
    "geometry": dataclasses.asdict(g),
    "n_head": int(imported.model_config.n_head),
    "unfrozen_layers": int(imported.model_config.unfrozen_layers),
  }
  return write_imported_run(output, config, run, imported.params, {}, checkpoint_path, provenance)


def import_sth_sepnet_run(
  checkpoint_path: str | os.PathLike,
  output: str | os.PathLike,
  *,
  scaler_mean: Sequence[float] | None = None,
  scaler_std: Sequence[float] | None = None,
  data: str | None = None,
  step_minutes: float | None = None,
  bounds: tuple[Sequence[float], Sequence[float]] | None = None,
  hypergraph: bool = True,
  n_head: int | None = None,
  stride: int = 8,
  hyperedge_size: int = 3,
) -> tuple[pathlib.Path, official_sth_sepnet.Imported]:
  """Official STH-SepNet checkpoint -> stjax run folder at `output`; returns (folder, the import).

  The model is the released variant (`official_sth_sepnet.model_config`); the protocol sthsepnet
  (48 -> 48 at the fixture geometry, TSLib borders, per-node scaler).

  Args:
    checkpoint_path: the official `checkpoint` file.
    output: new (or empty) folder.
    scaler_mean, scaler_std: the official StandardScaler (`mean_`, `scale_`): one value, or one
      per node; or
    data: the data it was trained on (a registry name or a series file): the scaler is fitted on
      its training rows only (sklearn on data[:num_train], as released), its shape must match.
    step_minutes: minutes per step when the scaler is given (not stored; default 5).
    bounds: (min_values, max_values) [N] of the output clamp in scaled units; default: from `data`
      (per-node min/max of the scaled training rows, the released run_main's), else no clamp.
    hypergraph, n_head, stride, hyperedge_size: as `official_sth_sepnet.load`.
  """
  check_scaler_source(scaler_mean, scaler_std, data)
  if data is not None and step_minutes is not None:
    raise UserError("--step-minutes: only with --scaler-mean/--scaler-std (--data has its own step)")
  if step_minutes is not None and not (np.isfinite(step_minutes) and step_minutes > 0):
    raise UserError(f"--step-minutes: must be a number > 0, got {step_minutes}")
  check_output(output)
  lo, hi = bounds if bounds is not None else (None, None)
  imported = official_sth_sepnet.load(
    checkpoint_path,
    hypergraph=hypergraph,
    n_head=n_head,
    stride=stride,
    hyperedge_size=hyperedge_size,
    min_values=lo,
    max_values=hi,
  )
  g = imported.geometry
  config = base_config(imported.model_config)
  config.optim.name = "adam"  # the released optimizer (only used if training resumes from here)
  config.data.protocol = "sthsepnet"
  config.data.input_len = config.data.output_len = g.seq_len
  config.data.nonnegative = "no"  # the released model does not clip its forecasts
  clamp = "given (--bounds)" if bounds is not None else None
  if data is None:
    n = g.num_nodes
    run = given_scaler_run(
      config,
      "sth-sepnet-import",
      5.0 if step_minutes is None else float(step_minutes),
      n,
      per_node(scaler_mean, n, "--scaler-mean"),
      per_node(scaler_std, n, "--scaler-std"),
      "given (--scaler-mean/--scaler-std: the official StandardScaler, per node)",
    )
  else:
    run, bundle = fitted_run(config, data, lambda spec: g.check_spec(spec, where=f"--data {data}"))
    if bounds is None:
      imported = official_sth_sepnet.with_bounds(imported, *training_bounds(bundle))
      clamp = f"the scaled train rows of {data} (per-node min/max, as released)"
  notes = list(imported.notes) + [
    "stjax.evaluate / stjax.predict feed no prompt (batch['prompt_ids']): their temporal branch is the "
    "prompt-free one"
  ]
  if hypergraph:
    notes.append("stjax.evaluate / stjax.predict use one fixed HGAT draw (no rng): deterministic")
  imported = imported._replace(notes=tuple(notes))
  provenance = {
    "format": "official STH-SepNet checkpoint (github jiawenchen10/ST-SepNet)",
    "geometry": dataclasses.asdict(g),
    "n_head": int(imported.model_config.n_head),
    "hypergraph": bool(hypergraph),
    "clamp": clamp,
    "notes": list(imported.notes),
  }
  path = write_imported_run(
    output, config, run, imported.params, imported.model_state, checkpoint_path, provenance
  )
  return path, imported
