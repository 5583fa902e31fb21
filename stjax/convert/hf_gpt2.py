"""Hugging Face GPT-2 <-> stjax GPT-2 params: a name/layout table, small per-tensor hooks.

    from stjax.convert import hf_gpt2
    cfg, params = hf_gpt2.load("gpt2")              # hub id, HF folder or stjax checkpoint folder
    cfg, params = hf_gpt2.load("/ckpt/gpt2", num_layers=6)
    GPT2(cfg).apply({"params": params}, inputs_embeds)

`load` returns params as a nested dict of NumPy float32 arrays with GPT-2 names (see
stjax/models/gpt2.py). `convert` writes a stjax checkpoint folder (orbax + config.json), `export`
writes an HF folder (`model.safetensors` + `config.json`) that `transformers.GPT2Model.
from_pretrained` loads. No torch is imported: safetensors is read with its NumPy API and
`pytorch_model.bin` with a weights-only unpickler.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, NamedTuple

import numpy as np

from stjax.convert import checkpoint_io, weights_io
from stjax.errors import UserError
from stjax.models.gpt2 import GPT2Config

Hook = Callable[[np.ndarray], np.ndarray]


def _float32(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


class Rule(NamedTuple):
  """One tensor: HF name (with {i} for the block), stjax path, expected shape, hooks both ways."""

  hf: str
  path: tuple[str, ...]
  shape: Callable[[GPT2Config], tuple[int, ...]]
  to_stjax: Hook = _float32
  to_hf: Hook = _float32


# HF Conv1D stores kernels as [in, out], which is exactly LoRADense's layout: no transpose, and
# c_attn stays fused q|k|v (split inside GPT2Attention.qkv). The hooks only fix the dtype.
GLOBAL_RULES = (
    Rule("wte.weight", ("wte", "embedding"), lambda c: (c.vocab_size, c.n_embd)),
    Rule("wpe.weight", ("wpe", "embedding"), lambda c: (c.n_positions, c.n_embd)),
    Rule("ln_f.weight", ("ln_f", "scale"), lambda c: (c.n_embd,)),
    Rule("ln_f.bias", ("ln_f", "bias"), lambda c: (c.n_embd,)),
)
BLOCK_RULES = (
    Rule("h.{i}.ln_1.weight", ("ln_1", "scale"), lambda c: (c.n_embd,)),
    Rule("h.{i}.ln_1.bias", ("ln_1", "bias"), lambda c: (c.n_embd,)),
    Rule("h.{i}.attn.c_attn.weight", ("attn", "c_attn", "kernel"), lambda c: (c.n_embd, 3 * c.n_embd)),
    Rule("h.{i}.attn.c_attn.bias", ("attn", "c_attn", "bias"), lambda c: (3 * c.n_embd,)),
    Rule("h.{i}.attn.c_proj.weight", ("attn", "c_proj", "kernel"), lambda c: (c.n_embd, c.n_embd)),
    Rule("h.{i}.attn.c_proj.bias", ("attn", "c_proj", "bias"), lambda c: (c.n_embd,)),
    Rule("h.{i}.ln_2.weight", ("ln_2", "scale"), lambda c: (c.n_embd,)),
    Rule("h.{i}.ln_2.bias", ("ln_2", "bias"), lambda c: (c.n_embd,)),
    Rule("h.{i}.mlp.c_fc.weight", ("mlp", "c_fc", "kernel"), lambda c: (c.n_embd, c.inner_dim)),
    Rule("h.{i}.mlp.c_fc.bias", ("mlp", "c_fc", "bias"), lambda c: (c.inner_dim,)),
    Rule("h.{i}.mlp.c_proj.weight", ("mlp", "c_proj", "kernel"), lambda c: (c.inner_dim, c.n_embd)),
    Rule("h.{i}.mlp.c_proj.bias", ("mlp", "c_proj", "bias"), lambda c: (c.n_embd,)),
)
# Present in some HF checkpoints, not weights of GPT2Model: causal-mask buffers, the tied LM head.
IGNORED = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$")
HF_PREFIX = "transformer."  # GPT2LMHeadModel & co. save the trunk under this prefix


def rules(config: GPT2Config) -> list[tuple[str, tuple[str, ...], Rule]]:
  """The full table for a config: (HF name, stjax path, rule) for every tensor."""
  out = [(r.hf, r.path, r) for r in GLOBAL_RULES]
  for i in range(config.n_layer):
    out += [(r.hf.format(i=i), (f"h_{i}",) + r.path, r) for r in BLOCK_RULES]
  return out


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _check_num_layers(available: int, num_layers: int | None, where: str) -> int:
  if num_layers is None:
    return available
  if num_layers < 1:
    raise UserError(f"num_layers: must be >= 1, got {num_layers}")
  if num_layers > available:
    raise UserError(f"num_layers: {num_layers} exceeds the {available} layers of {where}")
  return num_layers


# ----------------------------------------------------------------------------------------------
# Reading


def read_hf_folder(folder: str | os.PathLike, num_layers: int | None = None) -> tuple[GPT2Config, dict]:
  """Reads an HF GPT-2 folder (config.json + weights) -> (config truncated to num_layers, params)."""
  folder = pathlib.Path(folder)
  config_path = folder / "config.json"
  if not config_path.is_file():
    raise UserError(f"{folder}: not a GPT-2 model folder (no config.json; expected a Hugging Face "
                    "GPT-2 folder or a stjax checkpoint)")
  try:
    hf_config = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{config_path}: invalid JSON ({e})") from None
  if not isinstance(hf_config, dict):
    raise UserError(f"{config_path}: expected a JSON object")
  full = GPT2Config.from_hf(hf_config, source=str(config_path))
  config = full.replace(n_layer=_check_num_layers(full.n_layer, num_layers, str(config_path)))

  source = weights_io.open_weights(folder)
  names = {n[len(HF_PREFIX):] if n.startswith(HF_PREFIX) else n: n for n in source.names}
  known = {hf for hf, _, _ in rules(full)}
  unexpected = sorted(n for n in names if n not in known and not IGNORED.match(n))
  if unexpected:
    raise UserError(f"{source.description}: unexpected tensors for a {full.n_layer}-layer GPT-2: "
                    f"{_preview(unexpected)}")
  table = rules(config)
  missing = [hf for hf, _, _ in table if hf not in names]
  if missing:
    raise UserError(f"{source.description}: missing tensors: {_preview(missing)}")
  for hf, _, rule in table:
    got, want = tuple(source.shapes[names[hf]]), rule.shape(full)
    if got != want:
      raise UserError(f"{source.description}: tensor {hf} has shape {got}, but {config_path.name} "
                      f"implies {want}")
  params: dict = {}
  for hf, path, rule in table:
    _set(params, path, rule.to_stjax(source.read(names[hf])))
  return config, params


def from_hf_tensors(config: GPT2Config, tensors: dict[str, np.ndarray]) -> dict:
  """In-memory HF GPT2Model state dict (NumPy) -> stjax params for `config` (extra blocks ignored)."""
  params: dict = {}
  for hf, path, rule in rules(config):
    if hf not in tensors:
      raise UserError(f"state dict: missing tensor {hf}")
    value = np.asarray(tensors[hf])
    if value.shape != rule.shape(config):
      raise UserError(f"state dict: tensor {hf} has shape {value.shape}, expected {rule.shape(config)}")
    _set(params, path, rule.to_stjax(value))
  return params


def _preview(names: list[str], limit: int = 6) -> str:
  more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def download(repo_id: str) -> pathlib.Path:
  """Downloads config + weights of a hub model with huggingface_hub (safetensors preferred)."""
  from huggingface_hub import snapshot_download
  from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

  patterns = ["config.json", weights_io.SAFETENSORS, weights_io.SAFETENSORS_INDEX, "model-*.safetensors"]
  try:
    folder = pathlib.Path(snapshot_download(repo_id, allow_patterns=patterns))
    if not any(folder.glob("*.safetensors")):
      folder = pathlib.Path(snapshot_download(repo_id, allow_patterns=["config.json", weights_io.TORCH_BIN]))
  except LocalEntryNotFoundError:
    raise UserError(
        f"{repo_id}: no local folder of that name, and the Hugging Face hub cannot be reached (offline or "
        f"no network); download it where a network exists (`hf download {repo_id} --local-dir DIR`) "
        "and pass the folder instead") from None
  except HFValidationError:
    raise UserError(f"{repo_id}: no such folder, and not a valid Hugging Face hub id") from None
  except HfHubHTTPError as e:
    raise UserError(f"{repo_id}: Hugging Face hub error: {str(e).splitlines()[0]}") from None
  return folder


def _looks_like_path(source: str) -> bool:
  return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source


def load(path_or_hub_id: str | os.PathLike, num_layers: int | None = None) -> tuple[GPT2Config, dict]:
  """Pretrained GPT-2 -> (GPT2Config with n_layer = num_layers or all, params NumPy tree).

  Accepts a stjax checkpoint folder (written by `convert`), a Hugging Face folder
  (config.json + model.safetensors | sharded index | pytorch_model.bin), or a hub id ("gpt2").
  """
  source = str(path_or_hub_id)
  folder = pathlib.Path(source).expanduser()
  if folder.exists():
    if not folder.is_dir():
      raise UserError(f"{folder}: expected a model folder, found a file")
  elif _looks_like_path(source):
    raise UserError(f"{source}: no such folder")
  else:
    folder = download(source)
  if checkpoint_io.is_stjax_checkpoint(folder):
    return _read_stjax(folder, num_layers)
  return read_hf_folder(folder, num_layers)


def _read_stjax(folder: pathlib.Path, num_layers: int | None) -> tuple[GPT2Config, dict]:
  fields, params = checkpoint_io.load(folder)
  try:
    full = GPT2Config(**fields)
  except TypeError as e:
    raise UserError(f"{folder / checkpoint_io.CONFIG_FILE}: bad config ({e})") from None
  keep = _check_num_layers(full.n_layer, num_layers, str(folder))
  for i in range(keep, full.n_layer):
    params.pop(f"h_{i}", None)
  config = full.replace(n_layer=keep)
  expected = {path for _, path, _ in rules(config)}
  got = {tuple(p) for p in _leaf_paths(params)}
  if not expected <= got:
    raise UserError(f"{folder}: checkpoint lacks {_preview(['/'.join(p) for p in sorted(expected - got)])}")
  return config, params


def _leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  if isinstance(tree, dict):
    return [p for k, v in tree.items() for p in _leaf_paths(v, prefix + (k,))]
  return [prefix]


# ----------------------------------------------------------------------------------------------
# Writing


def convert(source: str | os.PathLike, output: str | os.PathLike,
            num_layers: int | None = None) -> tuple[GPT2Config, dict, pathlib.Path]:
  """Pretrained GPT-2 (see `load`) -> stjax checkpoint folder at `output` (atomic)."""
  config, params = load(source, num_layers)
  path = checkpoint_io.save(output, dataclasses.asdict(config), params, source=str(source))
  return config, params, path


def to_hf_tensors(config: GPT2Config, params: Any) -> dict[str, np.ndarray]:
  """stjax params -> HF GPT2Model state dict (NumPy float32). LoRA adapters are merged first."""
  from stjax.models.lora import merge_lora

  if any(p[-1] in ("lora_a", "lora_b") for p in _leaf_paths(_plain(params))):
    params = merge_lora(_plain(params), alpha=config.lora_scale_alpha)
  tensors = {}
  for hf, path, rule in rules(config):
    try:
      value = np.asarray(_get(params, path))
    except KeyError:
      raise UserError(f"params: missing {'/'.join(path)} for a {config.n_layer}-layer GPT-2") from None
    if value.shape != rule.shape(config):
      raise UserError(f"params: {'/'.join(path)} has shape {value.shape}, expected {rule.shape(config)}")
    tensors[hf] = rule.to_hf(value)
  return tensors


def export(config: GPT2Config, params: Any, output: str | os.PathLike) -> pathlib.Path:
  """Writes an HF folder (model.safetensors + config.json) that GPT2Model.from_pretrained loads."""
  from safetensors.numpy import save_file

  tensors = to_hf_tensors(config, params)
  with checkpoint_io.atomic_directory(output) as tmp:
    save_file(tensors, str(tmp / weights_io.SAFETENSORS), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
  return pathlib.Path(output).expanduser().absolute()


def overlay(init_params: Any, pretrained: Any, where: str = "pretrained") -> dict:
  """Copies every pretrained leaf into a freshly initialised tree (e.g. params["llm"]).

  Leaves the model has but the checkpoint lacks (LoRA lora_a/lora_b, extra FFNs) keep their init;
  a pretrained leaf the model lacks, or a shape mismatch, is a UserError.
  """
  init_params = _plain(init_params)
  out = dict(init_params)
  for key, value in _plain(pretrained).items():
    if key not in init_params:
      raise UserError(f"{where}: {key} has no place in the model (model keys: {sorted(init_params)})")
    if isinstance(value, dict):
      out[key] = overlay(init_params[key], value, f"{where}/{key}")
    else:
      shape = np.shape(init_params[key])
      if tuple(np.shape(value)) != tuple(shape):
        raise UserError(f"{where}/{key}: pretrained shape {np.shape(value)} != model shape {shape}")
      out[key] = value
  return out


def _plain(tree: Any) -> Any:
  """Unboxes flax Partitioned leaves and turns FrozenDicts into dicts."""
  import flax.linen as nn

  tree = nn.unbox(tree)
  if hasattr(tree, "items"):
    return {k: _plain(v) for k, v in tree.items()}
  return tree
