"""What every Hugging Face converter shares; `hf_gpt2`, `hf_llama` and `hf_bert` only add their tables.

A converter is a `Converter`: the family's config class, its tensor table (`Rule`s: HF name, stjax
path, HF shape, per-tensor hooks both ways), the tensors to ignore and the checkpoint format. It
reads HF folders (config.json + safetensors | sharded index | pytorch_model.bin, via `weights_io`),
stjax checkpoints (`checkpoint_io`) and hub ids (`download`), and writes both directions.

Also here, for any family: `resolve_folder` (folder or hub id -> folder), `read_config_json`,
`check_num_layers`, `overlay` (pretrained leaves into a fresh init) and small tree helpers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import numpy as np
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
  HfHubHTTPError,
  HFValidationError,
  LocalEntryNotFoundError,
  RepositoryNotFoundError,
)
from safetensors.numpy import save_file

from stjax.convert import checkpoint_io, weights_io
from stjax.errors import UserError
from stjax.layers.lora import merge_lora

Hook = Callable[[np.ndarray], np.ndarray]


def float32(x: np.ndarray) -> np.ndarray:
  """The default hook: same layout, contiguous float32."""
  return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


class Rule(NamedTuple):
  """One tensor: HF name (with {i} for the block), stjax path, expected HF shape, hooks both ways."""

  hf: str
  path: tuple[str, ...]
  shape: Callable[[Any], tuple[int, ...]]
  to_stjax: Hook = float32
  to_hf: Hook = float32


# ----------------------------------------------------------------------------------------------
# Small helpers


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
  """tree[path[0]][path[1]]... = value, creating the dicts on the way."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def get_path(tree: Any, path: tuple[str, ...]) -> Any:
  """tree[path[0]][path[1]]...; KeyError when a key is missing."""
  for key in path:
    tree = tree[key]
  return tree


def leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  """Key paths of every leaf of a nested mapping."""
  if isinstance(tree, dict):
    return [p for k, v in tree.items() for p in leaf_paths(v, prefix + (k,))]
  return [prefix]


def plain(tree: Any) -> Any:
  """Unboxes flax Partitioned leaves and turns FrozenDicts into dicts."""

  tree = nn.unbox(tree)
  if hasattr(tree, "items"):
    return {k: plain(v) for k, v in tree.items()}
  return tree


def preview(names: list[str], limit: int = 6) -> str:
  """The first `limit` names, comma separated, and how many more there are."""
  more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def check_num_layers(available: int, num_layers: int | None, where: str) -> int:
  """Blocks to keep: all when num_layers is None, else num_layers (1 .. available)."""
  if num_layers is None:
    return available
  if num_layers < 1:
    raise UserError(f"num_layers: must be >= 1, got {num_layers}")
  if num_layers > available:
    raise UserError(f"num_layers: {num_layers} exceeds the {available} layers of {where}")
  return num_layers


# ----------------------------------------------------------------------------------------------
# Finding a model folder


def looks_like_path(source: str) -> bool:
  """True when `source` is meant as a local path, not a hub id ("gpt2", "org/name")."""
  return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source


def download(repo_id: str) -> pathlib.Path:
  """Downloads config + weights of a hub model with huggingface_hub (safetensors preferred)."""

  patterns = ["config.json", weights_io.SAFETENSORS, weights_io.SAFETENSORS_INDEX, "model-*.safetensors"]
  try:
    folder = pathlib.Path(snapshot_download(repo_id, allow_patterns=patterns))
    if not any(folder.glob("*.safetensors")):
      folder = pathlib.Path(snapshot_download(repo_id, allow_patterns=["config.json", weights_io.TORCH_BIN]))
  except LocalEntryNotFoundError:
    raise UserError(
      f"{repo_id}: no local folder of that name, and the Hugging Face hub cannot be reached (offline or "
      f"no network); download it where a network exists (`hf download {repo_id} --local-dir DIR`) "
      "and pass the folder instead"
    ) from None
  except HFValidationError:
    raise UserError(f"{repo_id}: no such folder, and not a valid Hugging Face hub id") from None
  except RepositoryNotFoundError:  # the hub's 401/404 answer carries no more than "404 Client Error."
    raise UserError(
      f"{repo_id}: no such folder, and no such Hugging Face hub repository (or it is private or gated: "
      "log in with `hf auth login` or set HF_TOKEN)"
    ) from None
  except HfHubHTTPError as e:
    raise UserError(f"{repo_id}: Hugging Face hub error: {str(e).splitlines()[0]}") from None
  return folder


def resolve_folder(path_or_hub_id: str | os.PathLike) -> pathlib.Path:
  """An existing local folder as is; a hub id downloaded (`download`); anything else a UserError."""
  source = str(path_or_hub_id)
  folder = pathlib.Path(source).expanduser()
  if folder.exists():
    if not folder.is_dir():
      raise UserError(f"{folder}: expected a model folder, found a file")
    return folder
  if looks_like_path(source):
    raise UserError(f"{source}: no such folder")
  return download(source)


def read_config_json(folder: pathlib.Path, missing: str) -> tuple[pathlib.Path, dict]:
  """folder/config.json -> (its path, its JSON object); `missing` ends the error when it is absent."""
  config_path = folder / "config.json"
  if not config_path.is_file():
    raise UserError(f"{folder}: {missing}")
  try:
    meta = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{config_path}: invalid JSON ({e})") from None
  if not isinstance(meta, dict):
    raise UserError(f"{config_path}: expected a JSON object")
  return config_path, meta


# ----------------------------------------------------------------------------------------------
# One model family


def _same_shape(rule: Rule, config: Any) -> tuple[int, ...]:
  return rule.shape(config)


def _same_name(name: str) -> str:
  return name


def geometry_of(config: Any) -> dict:
  """A backbone config's fields as saved with a checkpoint: everything but the run's kernel choices."""
  return {k: v for k, v in dataclasses.asdict(config).items() if k != "kernels"}


@dataclasses.dataclass(frozen=True)
class Converter:
  """HF <-> stjax conversion of one model family.

  Attributes:
    name: family name in messages ("GPT-2").
    config_cls: its config dataclass, with `from_hf(dict, source=)`, `to_hf()` and `replace`.
    layers_field: the config field counting blocks ("n_layer").
    block_prefix: params key of block i is f"{block_prefix}_{i}" ("h" -> h_0, h_1, ...).
    global_rules, block_rules: the tensor table (block HF names contain {i}).
    ignored: HF tensors that are not weights of the trunk (LM head, buffers).
    hf_prefix: prefix of the trunk's tensors in task-head checkpoints ("transformer.").
    fmt: `format` of the family's stjax checkpoints.
    stjax_shape: (rule, config) -> shape of the stjax leaf (default: the HF shape).
    rename: legacy HF tensor name (prefix stripped) -> the table's name (default: unchanged), for
      old spellings such as BERT's `LayerNorm.gamma`; applied when reading HF folders only.
  """

  name: str
  config_cls: type
  layers_field: str
  block_prefix: str
  global_rules: tuple[Rule, ...]
  block_rules: tuple[Rule, ...]
  ignored: re.Pattern
  hf_prefix: str
  fmt: str
  stjax_shape: Callable[[Rule, Any], tuple[int, ...]] = _same_shape
  rename: Callable[[str], str] = _same_name

  def rules(self, config: Any) -> list[tuple[str, tuple[str, ...], Rule]]:
    """The full table for a config: (HF name, stjax path, rule) for every tensor."""
    out = [(r.hf, r.path, r) for r in self.global_rules]
    for i in range(getattr(config, self.layers_field)):
      out += [(r.hf.format(i=i), (f"{self.block_prefix}_{i}",) + r.path, r) for r in self.block_rules]
    return out

  def _truncated(self, full: Any, num_layers: int | None, where: str) -> Any:
    keep = check_num_layers(getattr(full, self.layers_field), num_layers, where)
    return full.replace(**{self.layers_field: keep})

  def load(self, path_or_hub_id: str | os.PathLike, num_layers: int | None = None) -> tuple[Any, dict]:
    """stjax checkpoint folder | HF folder | hub id -> (config truncated to num_layers, params)."""
    folder = resolve_folder(path_or_hub_id)
    if checkpoint_io.is_stjax_checkpoint(folder, fmt=self.fmt):
      return self.read_stjax(folder, num_layers)
    return self.read_hf_folder(folder, num_layers)

  def read_config(self, folder: str | os.PathLike) -> Any:
    """The full config of a stjax checkpoint or an HF folder of this family; no weights are read."""
    folder = pathlib.Path(folder)
    if checkpoint_io.is_stjax_checkpoint(folder, fmt=self.fmt):
      config_path, meta = read_config_json(folder, "no config.json")
      return self._from_fields(meta.get("config"), config_path)
    config_path, hf_config = read_config_json(
      folder,
      f"not a {self.name} model folder (no config.json; expected a Hugging Face "
      f"{self.name} folder or a stjax checkpoint)",
    )
    return self.config_cls.from_hf(hf_config, source=str(config_path))

  def _from_fields(self, fields: Any, where: pathlib.Path) -> Any:
    try:
      return self.config_cls(**fields)
    except TypeError as e:
      raise UserError(f"{where}: bad config ({e})") from None

  def read_hf_folder(self, folder: str | os.PathLike, num_layers: int | None = None) -> tuple[Any, dict]:
    """HF folder (config.json + weights) -> (config truncated to num_layers, params NumPy tree)."""
    folder = pathlib.Path(folder)
    config_path = folder / "config.json"
    full = self.read_config(folder)
    config = self._truncated(full, num_layers, str(config_path))

    source = weights_io.open_weights(folder)
    prefix = self.hf_prefix
    names = {self.rename(n[len(prefix) :] if n.startswith(prefix) else n): n for n in source.names}
    known = {hf for hf, _, _ in self.rules(full)}
    unexpected = sorted(n for n in names if n not in known and not self.ignored.match(n))
    if unexpected:
      raise UserError(
        f"{source.description}: unexpected tensors for a "
        f"{getattr(full, self.layers_field)}-layer {self.name}: {preview(unexpected)}"
      )
    table = self.rules(config)
    missing = [hf for hf, _, _ in table if hf not in names]
    if missing:
      raise UserError(f"{source.description}: missing tensors: {preview(missing)}")
    for hf, _, rule in table:
      got, want = tuple(source.shapes[names[hf]]), rule.shape(full)
      if got != want:
        raise UserError(
          f"{source.description}: tensor {hf} has shape {got}, but {config_path.name} implies {want}"
        )
    params: dict = {}
    for hf, path, rule in table:
      set_path(params, path, rule.to_stjax(source.read(names[hf])))
    return config, params

  def read_stjax(self, folder: pathlib.Path, num_layers: int | None = None) -> tuple[Any, dict]:
    """stjax checkpoint folder of this family -> (config truncated to num_layers, params)."""
    fields, params = checkpoint_io.load(folder, fmt=self.fmt)
    full = self._from_fields(fields, folder / checkpoint_io.CONFIG_FILE)
    config = self._truncated(full, num_layers, str(folder))
    for i in range(getattr(config, self.layers_field), getattr(full, self.layers_field)):
      params.pop(f"{self.block_prefix}_{i}", None)
    expected = {path for _, path, _ in self.rules(config)}
    got = {tuple(p) for p in leaf_paths(params)}
    if not expected <= got:
      raise UserError(f"{folder}: checkpoint lacks {preview(['/'.join(p) for p in sorted(expected - got)])}")
    return config, params

  def from_hf_tensors(self, config: Any, tensors: dict[str, np.ndarray]) -> dict:
    """In-memory HF state dict (NumPy, trunk names) -> stjax params for `config` (extra blocks ignored)."""
    params: dict = {}
    for hf, path, rule in self.rules(config):
      if hf not in tensors:
        raise UserError(f"state dict: missing tensor {hf}")
      value = np.asarray(tensors[hf])
      if value.shape != rule.shape(config):
        raise UserError(f"state dict: tensor {hf} has shape {value.shape}, expected {rule.shape(config)}")
      set_path(params, path, rule.to_stjax(value))
    return params

  def convert(
    self, source: str | os.PathLike, output: str | os.PathLike, num_layers: int | None = None
  ) -> tuple[Any, dict, pathlib.Path]:
    """Pretrained model (see `load`) -> stjax checkpoint folder at `output` (atomic)."""
    config, params = self.load(source, num_layers)
    path = checkpoint_io.save(output, geometry_of(config), params, source=str(source), fmt=self.fmt)
    return config, params, path

  def to_hf_tensors(self, config: Any, params: Any) -> dict[str, np.ndarray]:
    """stjax params -> HF state dict (NumPy float32, trunk names). LoRA adapters are merged first."""

    params = plain(params)
    if any(p[-1] in ("lora_a", "lora_b") for p in leaf_paths(params)):
      params = merge_lora(params, alpha=config.lora_scale_alpha)
    tensors = {}
    for hf, path, rule in self.rules(config):
      try:
        value = np.asarray(get_path(params, path))
      except KeyError:
        raise UserError(
          f"params: missing {'/'.join(path)} for a {getattr(config, self.layers_field)}-layer {self.name}"
        ) from None
      want = self.stjax_shape(rule, config)
      if value.shape != want:
        raise UserError(f"params: {'/'.join(path)} has shape {value.shape}, expected {want}")
      tensors[hf] = rule.to_hf(value)
    return tensors

  def export(self, config: Any, params: Any, output: str | os.PathLike) -> pathlib.Path:
    """Writes an HF folder (model.safetensors + config.json) that transformers' from_pretrained loads."""

    tensors = self.to_hf_tensors(config, params)
    with checkpoint_io.atomic_directory(output) as tmp:
      save_file(tensors, str(tmp / weights_io.SAFETENSORS), metadata={"format": "pt"})
      (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
    return pathlib.Path(output).expanduser().absolute()


# ----------------------------------------------------------------------------------------------
# Into a model


def overlay(init_params: Any, pretrained: Any, where: str = "pretrained") -> dict:
  """Copies every pretrained leaf into a freshly initialised tree (e.g. params["llm"]).

  Leaves the model has but the checkpoint lacks (LoRA lora_a/lora_b, extra FFNs) keep their init;
  a pretrained leaf the model lacks, or a shape mismatch, is a UserError.
  """
  init_params = plain(init_params)
  out = dict(init_params)
  for key, value in plain(pretrained).items():
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
