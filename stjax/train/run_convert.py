"""Run folders from and to other formats (the library side of `python -m stjax.convert`).

`import_st_llm_run`: the official ST-LLM `best_model.pth` -> a stjax run folder: config.json (the
model config the checkpoint implies), checkpoints/best in the trainer's format, run.json +
scaler.npz (the stllm protocol at the checkpoint's geometry; the scaler given, or fitted on the
training split of the given data only), and imported.json (source file, sha256, geometry).
`stjax.evaluate` and `stjax.predict` accept it like a trained run.

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
from typing import Any

import jax
import numpy as np
from safetensors.numpy import save_file

from stjax.convert import checkpoint_io, hf_bert, hf_gpt2, hf_llama, official_st_llm
from stjax.convert.hf_common import get_path, leaf_paths, plain
from stjax.convert.pretrained import backbone_config_of
from stjax.data import registry, run_data
from stjax.data.protocols import get_protocol
from stjax.data.windows import Scaler, bundle_from_dataset, read_data, reader_options
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
  given = scaler_mean is not None or scaler_std is not None
  if given == (data is not None):
    raise UserError("--scaler-mean/--scaler-std or --data: give the scaler, or the data it was fitted on")
  if given and (scaler_mean is None or scaler_std is None):
    raise UserError("--scaler-mean and --scaler-std: give both")
  if given and not (np.isfinite([scaler_mean, scaler_std]).all() and scaler_std > 0):
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
    config.data.name = ""  # no data known: evaluate needs --data or --windows
    run = _given_scaler_run(g, float(scaler_mean), float(scaler_std))
    bundle = run.bundle({})
  else:
    if data in registry.DATASETS:
      config.data.name = data
    else:
      path = pathlib.Path(data).expanduser().absolute()
      config.data.name, config.data.path = path.stem, str(path)
    dataset, protocol = read_data(config.data)
    bundle = bundle_from_dataset(dataset, protocol)  # fitted on the training windows only
    g.check_spec(bundle.spec, where=f"--data {data}")
    run = run_data.from_bundle(
      bundle, reader_options(config.data), fitted_on=f"the train windows of {data} (protocol stllm)"
    )
  exp = checkpoint_experiment(config, bundle, run.num_train_windows)
  state = _with_params(exp, imported.params, checkpoint_path)
  provenance = {
    "source": str(pathlib.Path(checkpoint_path).expanduser().absolute()),
    "sha256": _sha256(checkpoint_path),
    "format": "official ST-LLM best_model.pth (github ChenxiLiu-HNU/ST-LLM)",
    "geometry": dataclasses.asdict(g),
    "n_head": int(imported.model_config.n_head),
    "unfrozen_layers": int(imported.model_config.unfrozen_layers),
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


def _given_scaler_run(g, mean: float, std: float) -> run_data.RunData:
  protocol = get_protocol("stllm").resolve(g.steps_per_day, g.input_len, g.output_len)
  return run_data.RunData(
    name="st-llm-import",
    channels=("value",),
    step_minutes=24 * 60 / g.steps_per_day,
    num_nodes=g.num_nodes,
    node_ids=None,
    protocol=protocol,
    scaler=Scaler(np.full((1, 1), mean, np.float32), np.full((1, 1), std, np.float32)),
    adjacency=None,
    num_train_windows=None,
    splits={},
    reader={},
    fitted_on="given (--scaler-mean/--scaler-std: the official StandardScaler of x_train[..., 0])",
  )


def _with_params(exp, params: dict, source) -> Any:
  """A fresh TrainState of `exp` holding `params` (checked leaf by leaf), optimizer state re-made."""
  state = exp.init_state()
  want = plain(jax.tree.map(lambda a: a, state.params))
  got = plain(params)
  want_paths, got_paths = set(leaf_paths(want)), set(leaf_paths(got))
  for p in sorted(want_paths ^ got_paths):
    side = "missing from" if p in want_paths else "unknown to"
    raise UserError(f"{source}: {'/'.join(p)} is {side} the stjax model built from its config")
  for p in sorted(want_paths):
    if np.shape(get_path(want, p)) != np.shape(get_path(got, p)):
      raise UserError(
        f"{source}: {'/'.join(p)} has shape {np.shape(get_path(got, p))}, the model {np.shape(get_path(want, p))}"
      )
  with exp.context():
    new = jax.device_put(jax.tree.map(lambda a: np.asarray(a, np.float32), got), exp.state_shardings.params)
    opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(new)
  return state.replace(params=new, opt_state=opt_state)


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
