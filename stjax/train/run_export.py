"""A run folder's best checkpoint -> files other tools read (`python -m stjax.convert export-run`).

`export_run` writes `model.safetensors` (every parameter and model-state leaf, named by its path),
`data.safetensors` (scaler and adjacency) and `config.json` (model config, the run's data facts,
the tensor index), plus `llm/` as a Hugging Face folder when the model has params["llm"]; or, with
`fmt="official"`, an ST-LLM run as the official `best_model.pth` and `scaler.json`. Output folders
are written into a temporary sibling and renamed at the end (`check_output` refuses a used path).
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
from safetensors.numpy import save_file

from stjax.convert import checkpoint_io, hf_bert, hf_gpt2, hf_llama, official_st_llm
from stjax.convert.hf_common import get_path, leaf_paths, plain
from stjax.convert.pretrained import backbone_config_of
from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY, backbone_config
from stjax.train import checkpoint
from stjax.train.run_folder import load_run

MODEL_FILE, DATA_FILE, BACKBONE_DIR = "model.safetensors", "data.safetensors", "llm"
EXPORT_FORMAT, EXPORT_VERSION = "stjax.model", 1


def check_output(output) -> None:
  out = pathlib.Path(output).expanduser().absolute()
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise UserError(f"{out}: output exists and is not an empty folder; remove it or choose another")
  if not out.parent.is_dir():
    raise UserError(f"{out.parent}: parent folder of the output does not exist")


def export_run(workdir: str | os.PathLike, output: str | os.PathLike, fmt: str = "stjax") -> dict:
  """A run folder's best checkpoint -> `output` (see the module docstring); returns a summary."""
  if fmt not in ("stjax", "official"):
    raise UserError(f"--format: {fmt!r} is not stjax or official")
  check_output(output)
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
