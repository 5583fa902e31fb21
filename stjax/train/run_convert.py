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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from safetensors.numpy import save_file

from stjax.convert import checkpoint_io, hf_bert, hf_gpt2, hf_llama, official_st_llm, official_sth_sepnet
from stjax.convert.hf_common import get_path, leaf_paths, plain
from stjax.convert.pretrained import backbone_config_of
from stjax.data import registry, run_data
from stjax.data.protocols import get_protocol
from stjax.data.windows import DataBundle, Scaler, bundle_from_dataset, read_data, reader_options
from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY, backbone_config
from stjax.train import checkpoint
from stjax.train.config import base_config
from stjax.train.run_folder import IMPORT_FILE, checkpoint_experiment, load_run

MODEL_FILE, DATA_FILE, BACKBONE_DIR = "model.safetensors", "data.safetensors", "llm"
EXPORT_FORMAT, EXPORT_VERSION = "stjax.model", 1


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
  _check_scaler_source(scaler_mean, scaler_std, data)
  if data is None and not (np.isfinite([scaler_mean, scaler_std]).all() and scaler_std > 0):
    raise UserError(f"--scaler-std: must be a finite number > 0 (mean {scaler_mean}, std {scaler_std})")
  _check_output(output)
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
    run = _given_scaler_run(
      config,
      "st-llm-import",
      24 * 60 / g.steps_per_day,
      g.num_nodes,
      [scaler_mean],
      [scaler_std],
      "given (--scaler-mean/--scaler-std: the official StandardScaler of x_train[..., 0])",
    )
  else:
    run, _ = _fitted_run(config, data, lambda spec: g.check_spec(spec, where=f"--data {data}"))
  provenance = {
    "format": "official ST-LLM best_model.pth (github ChenxiLiu-HNU/ST-LLM)",
    "geometry": dataclasses.asdict(g),
    "n_head": int(imported.model_config.n_head),
    "unfrozen_layers": int(imported.model_config.unfrozen_layers),
  }
  return _write_imported_run(output, config, run, imported.params, {}, checkpoint_path, provenance)


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
  _check_scaler_source(scaler_mean, scaler_std, data)
  if data is not None and step_minutes is not None:
    raise UserError("--step-minutes: only with --scaler-mean/--scaler-std (--data has its own step)")
  if step_minutes is not None and not (np.isfinite(step_minutes) and step_minutes > 0):
    raise UserError(f"--step-minutes: must be a number > 0, got {step_minutes}")
  _check_output(output)
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
    run = _given_scaler_run(
      config,
      "sth-sepnet-import",
      5.0 if step_minutes is None else float(step_minutes),
      n,
      _per_node(scaler_mean, n, "--scaler-mean"),
      _per_node(scaler_std, n, "--scaler-std"),
      "given (--scaler-mean/--scaler-std: the official StandardScaler, per node)",
    )
  else:
    run, bundle = _fitted_run(config, data, lambda spec: g.check_spec(spec, where=f"--data {data}"))
    if bounds is None:
      imported = official_sth_sepnet.with_bounds(imported, *_training_bounds(bundle))
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
  path = _write_imported_run(
    output, config, run, imported.params, imported.model_state, checkpoint_path, provenance
  )
  return path, imported


def _check_scaler_source(mean, std, data) -> None:
  given = mean is not None or std is not None
  if given == (data is not None):
    raise UserError("--scaler-mean/--scaler-std or --data: give the scaler, or the data it was fitted on")
  if given and (mean is None or std is None):
    raise UserError("--scaler-mean and --scaler-std: give both")


def _per_node(values, n: int, flag: str) -> np.ndarray:
  a = np.asarray(values, np.float64).reshape(-1)
  if a.size not in (1, n):
    raise UserError(f"{flag}: {a.size} values; give one, or one per node ({n})")
  if not np.isfinite(a).all() or (flag == "--scaler-std" and not (a > 0).all()):
    raise UserError(f"{flag}: values must be finite{' and > 0' if flag == '--scaler-std' else ''}")
  return a


def parse_values(text: str, flag: str) -> list[float]:
  """A flag's numbers: `1.5`, `1,2,3`, or a .npy / .json (list) / text file holding them."""
  try:
    return [float(v) for v in text.split(",")]
  except ValueError:
    pass
  path = pathlib.Path(text).expanduser()
  if not path.is_file():
    raise UserError(f"{flag}: {text!r} is neither numbers (comma-separated) nor a file")
  try:
    if path.suffix == ".npy":
      values = np.load(path, allow_pickle=False)
    elif path.suffix == ".json":
      values = json.loads(path.read_text())
    else:
      values = path.read_text().replace(",", " ").split()
    return [float(v) for v in np.asarray(values, np.float64).reshape(-1)]
  except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:
    raise UserError(f"{flag}: {path}: expected numbers ({type(e).__name__})") from None


def _given_scaler_run(
  config, name: str, step_minutes: float, num_nodes: int, mean, std, fitted_on: str
) -> run_data.RunData:
  """RunData of one value channel with a given scaler ([1 or N] values each), no data known."""
  config.data.name = ""  # no data known: evaluate needs --data or --windows
  steps_per_day = 24 * 60 / step_minutes
  if abs(steps_per_day - round(steps_per_day)) > 1e-9:
    raise UserError(f"--step-minutes: {step_minutes:g} minutes does not divide a day")
  protocol = get_protocol(config.data.protocol).resolve(
    round(steps_per_day), config.data.input_len, config.data.output_len
  )
  return run_data.RunData(
    name=name,
    channels=("value",),
    step_minutes=step_minutes,
    num_nodes=num_nodes,
    node_ids=None,
    protocol=protocol,
    scaler=Scaler(np.asarray(mean, np.float32).reshape(-1, 1), np.asarray(std, np.float32).reshape(-1, 1)),
    adjacency=None,
    num_train_windows=None,
    splits={},
    reader={},
    fitted_on=fitted_on,
  )


def _fitted_run(config, data: str, check) -> tuple[run_data.RunData, DataBundle]:
  """config.data pointed at `data` (registry name or path), read and cut by config.data.protocol,
  `check(spec)`ed; the RunData with the scaler fitted on the training split only, and the bundle."""
  if data in registry.DATASETS:
    config.data.name = data
  else:
    path = pathlib.Path(data).expanduser().absolute()
    config.data.name, config.data.path = path.stem, str(path)
  dataset, protocol = read_data(config.data)
  bundle = bundle_from_dataset(dataset, protocol)  # fitted on the training split only
  check(bundle.spec)
  part = (
    "rows" if protocol.split_rule == "tslib_borders" and protocol.scaler_rule == "per_node" else "windows"
  )
  fitted_on = f"the train {part} of {data} (protocol {protocol.name})"
  return run_data.from_bundle(bundle, reader_options(config.data), fitted_on=fitted_on), bundle


def _training_bounds(bundle: DataBundle) -> tuple[np.ndarray, np.ndarray]:
  """Per-node min and max [N] of the scaled rows the scaler was fitted on (one channel): the
  released run_main's `min_values` / `max_values` (np.min/max of the scaled train data_x)."""
  ds, p = bundle.dataset, bundle.protocol
  rows = p.scaler_weights(ds.num_steps, p.split_times(ds.num_steps)) > 0
  scaled = bundle.scaler.transform(np.asarray(ds.values[rows], np.float64))[..., 0]  # [T_train, N]
  return scaled.min(0), scaled.max(0)


def _write_imported_run(output, config, run, params: dict, model_state: dict, source, provenance: dict):
  """Writes the run folder of an imported checkpoint (see the module docstring), atomically."""
  exp = checkpoint_experiment(config, run.bundle({}), run.num_train_windows)
  state = _with_variables(exp, params, model_state, source)
  provenance = {
    "source": str(pathlib.Path(source).expanduser().absolute()),
    "sha256": _sha256(source),
    **provenance,
  }
  with checkpoint_io.atomic_directory(output) as tmp:
    text = json.dumps(checkpoint.config_to_dict(config), indent=2, sort_keys=True) + "\n"
    (tmp / "config.json").write_text(text)
    run.save(tmp)
    (tmp / IMPORT_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    ckpts = checkpoint.Checkpoints(tmp, keep=1)
    try:
      ckpts.save_best(0, state, {"step": 0, "imported_from": provenance["source"]})
    finally:
      ckpts.close()
  return pathlib.Path(output).expanduser().absolute()


def _check_tree(want: dict, got: dict, source, where: str) -> None:
  want_paths, got_paths = set(leaf_paths(want)), set(leaf_paths(got))
  for p in sorted(want_paths ^ got_paths):
    side = "missing from" if p in want_paths else "unknown to"
    raise UserError(f"{source}: {where}{'/'.join(p)} is {side} the stjax model built from its config")
  for p in sorted(want_paths):
    if np.shape(get_path(want, p)) != np.shape(get_path(got, p)):
      raise UserError(
        f"{source}: {where}{'/'.join(p)} has shape {np.shape(get_path(got, p))}, "
        f"the model {np.shape(get_path(want, p))}"
      )


def _with_variables(exp, params: dict, model_state: dict, source) -> Any:
  """A fresh TrainState of `exp` holding `params` and the collections of `model_state` (checked
  leaf by leaf; other collections keep their init), optimizer state re-made."""
  state = exp.init_state()
  _check_tree(plain(state.params), plain(params), source, "")
  collections = dict(state.model_state)
  for name, tree in model_state.items():
    if name not in collections:
      raise UserError(f"{source}: collection {name!r} is unknown to the stjax model built from its config")
    _check_tree(plain(collections[name]), plain(tree), source, f"{name}/")
    collections[name] = jax.tree.map(lambda a: np.asarray(a, np.float32), plain(tree))
  f32 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float32), plain(tree))
  with exp.context():
    new = jax.device_put(f32(params), exp.state_shardings.params)
    collections = jax.device_put(collections, exp.state_shardings.model_state)
    opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(new)
  return state.replace(params=new, opt_state=opt_state, model_state=collections)


def _sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _check_output(output) -> None:
  out = pathlib.Path(output).expanduser().absolute()
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise UserError(f"{out}: output exists and is not an empty folder; remove it or choose another")
  if not out.parent.is_dir():
    raise UserError(f"{out.parent}: parent folder of the output does not exist")


# ----------------------------------------------------------------------------------------------
# Export


def export_run(workdir: str | os.PathLike, output: str | os.PathLike, fmt: str = "stjax") -> dict:
  """A run folder's best checkpoint -> `output` (see the module docstring); returns a summary."""
  if fmt not in ("stjax", "official"):
    raise UserError(f"--format: {fmt!r} is not stjax or official")
  _check_output(output)
  loaded = load_run(workdir, need_data=False)
  config, run = loaded.experiment.config, loaded.run
  params = _numpy(loaded.state.params)
  collections = _numpy(loaded.state.model_state)
  if fmt == "official":
    if config.model.name != "st_llm":
      raise UserError(
        f"--format=official: only ST-LLM runs have an official layout (this run is {config.model.name})"
      )
    if run.scaler.mean.size != 1:
      raise UserError(
        "--format=official: the official code has one scalar scaler; this run's is per channel or node"
      )
    state = official_st_llm.to_official(params)
    with checkpoint_io.atomic_directory(output) as tmp:
      official_st_llm.write_official(state, tmp / "best_model.pth")
      scaler = {"mean": float(run.scaler.mean.item()), "std": float(run.scaler.std.item())}
      (tmp / "scaler.json").write_text(json.dumps(scaler, indent=2) + "\n")
    return {"files": ["best_model.pth", "scaler.json"], "tensors": len(state)}
  return _export_stjax(workdir, output, config, run, params, collections)


def _export_stjax(workdir, output, config, run, params: dict, collections: dict) -> dict:
  tensors = {"params/" + "/".join(p): np.ascontiguousarray(get_path(params, p)) for p in leaf_paths(params)}
  for name, tree in collections.items():
    tensors.update(
      {f"{name}/" + "/".join(p): np.ascontiguousarray(get_path(tree, p)) for p in leaf_paths(tree)}
    )
  data = {"scaler_mean": run.scaler.mean, "scaler_std": run.scaler.std}
  if run.adjacency is not None:
    data["adjacency"] = run.adjacency
  index = {
    file: {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in t.items()}
    for file, t in ((MODEL_FILE, tensors), (DATA_FILE, data))
  }
  meta = {
    "format": EXPORT_FORMAT,
    "version": EXPORT_VERSION,
    "source": str(pathlib.Path(workdir).absolute()),
    "model": checkpoint.config_to_dict(config.model),
    "data": run.to_json(),
    "tensors": index,
    "backbone": None,
  }
  with checkpoint_io.atomic_directory(output) as tmp:
    save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": EXPORT_FORMAT})
    save_file(data, str(tmp / DATA_FILE), metadata={"format": EXPORT_FORMAT})
    if LLM_KEY in params:
      meta["backbone"] = _export_backbone(config.model, params[LLM_KEY], tmp / BACKBONE_DIR)
    (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
  return {
    "files": sorted([MODEL_FILE, DATA_FILE, "config.json"]),
    "tensors": len(tensors),
    "backbone": meta["backbone"],
  }


def _export_backbone(model_config, llm: dict, folder: pathlib.Path) -> dict:
  """params["llm"] as a Hugging Face folder; what it holds (or why not) for config.json."""
  family = model_config.get("backbone", "gpt2")
  converter = {"gpt2": hf_gpt2, "llama": hf_llama, "bert": hf_bert}[family]
  try:
    cfg = backbone_config(
      model_config, causal=True, use_wpe=True, pretrained_config=backbone_config_of(model_config)
    )
    converter.export(cfg, llm, folder)
  except UserError as e:  # e.g. a trunk without GPT-2's position table: the safetensors hold it all
    print(f"stjax: note: params/llm not exported as a Hugging Face folder: {e}")
    return {"family": family, "folder": None, "why_not": str(e)}
  covered = {tuple(path) for _, path, _ in converter.rules(cfg)}
  extra = [
    "/".join(p) for p in leaf_paths(llm) if tuple(p) not in covered and p[-1] not in ("lora_a", "lora_b")
  ]
  return {
    "family": family,
    "folder": BACKBONE_DIR,
    "lora_merged": any(p[-1] == "lora_b" for p in leaf_paths(llm)),
    "not_in_folder": extra,
  }


def _numpy(tree) -> dict:
  return jax.tree.map(np.asarray, plain(jax.device_get(tree)))
