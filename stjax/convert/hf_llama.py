"""Hugging Face Llama <-> stjax Llama params: a name/layout table, small per-tensor hooks.

    from stjax.convert import hf_llama
    cfg, params = hf_llama.load("meta-llama/Llama-3.2-1B")   # hub id, HF folder or stjax checkpoint
    cfg, params = hf_llama.load("/ckpt/llama-1b", num_layers=8)
    Llama(cfg).apply({"params": params}, inputs_embeds)

Same machinery as `stjax.convert.hf_gpt2` (weights read with safetensors' NumPy API, sharded
index included, or a weights-only `pytorch_model.bin` reader; hub download; atomic orbax + config.json
checkpoints). Only the table differs: HF `nn.Linear.weight` is [out, in], stjax kernels are
[in, out], so every projection is transposed both ways; RMSNorm weights map to `scale`.
The trunk has no LM head: `lm_head.weight` (untied models) is not read, and rotary `inv_freq`
buffers of old checkpoints are ignored (they are recomputed from the config).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

import numpy as np

from stjax.convert import checkpoint_io, weights_io
from stjax.convert.hf_gpt2 import (Rule, _check_num_layers, _get, _leaf_paths, _looks_like_path,
                                   _plain, _preview, _set, download)
from stjax.errors import UserError
from stjax.models.llama import LlamaConfig

FORMAT = "stjax.llama"  # `format` of a stjax Llama checkpoint's config.json


def _linear_to_stjax(x: np.ndarray) -> np.ndarray:
  """HF Linear weight [out, in] -> kernel [in, out], float32."""
  return np.ascontiguousarray(np.asarray(x, dtype=np.float32).T)


_linear_to_hf = _linear_to_stjax  # the transpose is its own inverse


def _linear(hf: str, path: tuple[str, ...], out_dim, in_dim) -> Rule:
  return Rule(hf, path + ("kernel",), lambda c: (out_dim(c), in_dim(c)), _linear_to_stjax, _linear_to_hf)


def _q(c: LlamaConfig) -> int:
  return c.num_attention_heads * c.head_dim


def _kv(c: LlamaConfig) -> int:
  return c.num_key_value_heads * c.head_dim


def _d(c: LlamaConfig) -> int:
  return c.hidden_size


def _mlp(c: LlamaConfig) -> int:
  return c.intermediate_size


# Shapes are HF's (Linear [out, in]).
GLOBAL_RULES = (
    Rule("embed_tokens.weight", ("embed_tokens", "embedding"), lambda c: (c.vocab_size, c.hidden_size)),
    Rule("norm.weight", ("norm", "scale"), lambda c: (c.hidden_size,)),
)
BLOCK_RULES = (
    Rule("layers.{i}.input_layernorm.weight", ("input_layernorm", "scale"), lambda c: (c.hidden_size,)),
    _linear("layers.{i}.self_attn.q_proj.weight", ("self_attn", "q_proj"), _q, _d),
    _linear("layers.{i}.self_attn.k_proj.weight", ("self_attn", "k_proj"), _kv, _d),
    _linear("layers.{i}.self_attn.v_proj.weight", ("self_attn", "v_proj"), _kv, _d),
    _linear("layers.{i}.self_attn.o_proj.weight", ("self_attn", "o_proj"), _d, _q),
    Rule("layers.{i}.post_attention_layernorm.weight", ("post_attention_layernorm", "scale"),
         lambda c: (c.hidden_size,)),
    _linear("layers.{i}.mlp.gate_proj.weight", ("mlp", "gate_proj"), _mlp, _d),
    _linear("layers.{i}.mlp.up_proj.weight", ("mlp", "up_proj"), _mlp, _d),
    _linear("layers.{i}.mlp.down_proj.weight", ("mlp", "down_proj"), _d, _mlp),
)
# In some HF checkpoints but not weights of the trunk: the LM head, old rotary buffers.
IGNORED = re.compile(r"^(lm_head\.weight|layers\.\d+\.self_attn\.rotary_emb\.inv_freq)$")
HF_PREFIX = "model."  # LlamaForCausalLM & co. save the trunk under this prefix


def rules(config: LlamaConfig) -> list[tuple[str, tuple[str, ...], Rule]]:
  """The full table for a config: (HF name, stjax path, rule) for every tensor."""
  out = [(r.hf, r.path, r) for r in GLOBAL_RULES]
  for i in range(config.num_hidden_layers):
    out += [(r.hf.format(i=i), (f"layers_{i}",) + r.path, r) for r in BLOCK_RULES]
  return out


# ----------------------------------------------------------------------------------------------
# Reading


def read_hf_folder(folder: str | os.PathLike, num_layers: int | None = None) -> tuple[LlamaConfig, dict]:
  """Reads an HF Llama folder (config.json + weights) -> (config truncated to num_layers, params)."""
  folder = pathlib.Path(folder)
  config_path = folder / "config.json"
  if not config_path.is_file():
    raise UserError(f"{folder}: not a Llama model folder (no config.json; expected a Hugging Face "
                    "Llama folder or a stjax checkpoint)")
  try:
    hf_config = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{config_path}: invalid JSON ({e})") from None
  if not isinstance(hf_config, dict):
    raise UserError(f"{config_path}: expected a JSON object")
  full = LlamaConfig.from_hf(hf_config, source=str(config_path))
  keep = _check_num_layers(full.num_hidden_layers, num_layers, str(config_path))
  config = full.replace(num_hidden_layers=keep)

  source = weights_io.open_weights(folder)
  names = {n[len(HF_PREFIX):] if n.startswith(HF_PREFIX) else n: n for n in source.names}
  known = {hf for hf, _, _ in rules(full)}
  unexpected = sorted(n for n in names if n not in known and not IGNORED.match(n))
  if unexpected:
    raise UserError(f"{source.description}: unexpected tensors for a {full.num_hidden_layers}-layer "
                    f"Llama: {_preview(unexpected)}")
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


def load(path_or_hub_id: str | os.PathLike, num_layers: int | None = None) -> tuple[LlamaConfig, dict]:
  """Pretrained Llama -> (LlamaConfig with num_hidden_layers = num_layers or all, params NumPy tree).

  Accepts a stjax Llama checkpoint folder (written by `convert`), a Hugging Face folder
  (config.json + model.safetensors | sharded index | pytorch_model.bin), or a hub id
  ("meta-llama/Llama-3.2-1B"; gated on the hub: log in with `hf auth login` first).
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
  if checkpoint_io.is_stjax_checkpoint(folder, fmt=FORMAT):
    return _read_stjax(folder, num_layers)
  return read_hf_folder(folder, num_layers)


def _read_stjax(folder: pathlib.Path, num_layers: int | None) -> tuple[LlamaConfig, dict]:
  fields, params = checkpoint_io.load(folder, fmt=FORMAT)
  try:
    full = LlamaConfig(**fields)
  except TypeError as e:
    raise UserError(f"{folder / checkpoint_io.CONFIG_FILE}: bad config ({e})") from None
  keep = _check_num_layers(full.num_hidden_layers, num_layers, str(folder))
  for i in range(keep, full.num_hidden_layers):
    params.pop(f"layers_{i}", None)
  config = full.replace(num_hidden_layers=keep)
  expected = {path for _, path, _ in rules(config)}
  got = {tuple(p) for p in _leaf_paths(params)}
  if not expected <= got:
    raise UserError(f"{folder}: checkpoint lacks {_preview(['/'.join(p) for p in sorted(expected - got)])}")
  return config, params


# ----------------------------------------------------------------------------------------------
# Writing


def convert(source: str | os.PathLike, output: str | os.PathLike,
            num_layers: int | None = None) -> tuple[LlamaConfig, dict, pathlib.Path]:
  """Pretrained Llama (see `load`) -> stjax checkpoint folder at `output` (atomic)."""
  config, params = load(source, num_layers)
  path = checkpoint_io.save(output, dataclasses.asdict(config), params, source=str(source), fmt=FORMAT)
  return config, params, path


def to_hf_tensors(config: LlamaConfig, params: Any) -> dict[str, np.ndarray]:
  """stjax params -> HF LlamaModel state dict (NumPy float32). LoRA adapters are merged first."""
  from stjax.models.lora import merge_lora

  params = _plain(params)
  if any(p[-1] in ("lora_a", "lora_b") for p in _leaf_paths(params)):
    params = merge_lora(params, alpha=config.lora_scale_alpha)
  tensors = {}
  for hf, path, rule in rules(config):
    try:
      value = np.asarray(_get(params, path))
    except KeyError:
      raise UserError(f"params: missing {'/'.join(path)} for a {config.num_hidden_layers}-layer Llama") from None
    want = rule.shape(config)
    stjax_shape = want[::-1] if rule.to_stjax is _linear_to_stjax else want
    if value.shape != stjax_shape:
      raise UserError(f"params: {'/'.join(path)} has shape {value.shape}, expected {stjax_shape}")
    tensors[hf] = rule.to_hf(value)
  return tensors


def export(config: LlamaConfig, params: Any, output: str | os.PathLike) -> pathlib.Path:
  """Writes an HF folder (model.safetensors + config.json) that LlamaModel.from_pretrained loads."""
  from safetensors.numpy import save_file

  tensors = to_hf_tensors(config, params)
  with checkpoint_io.atomic_directory(output) as tmp:
    save_file(tensors, str(tmp / weights_io.SAFETENSORS), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
  return pathlib.Path(output).expanduser().absolute()
