"""Pretrained backbones from files: which family a folder holds, and its weights.

config, params = load_backbone("gpt2" | "meta-llama/Llama-3.2-1B" | FOLDER, num_layers=6)
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from stjax.convert import hf_bert, hf_gpt2, hf_llama
from stjax.convert.hf_common import read_config_json, resolve_folder
from stjax.errors import UserError

LOADERS = {
  "gpt2": hf_gpt2.load,
  "llama": hf_llama.load,
  "bert": hf_bert.load,
}  # family -> load(folder, num_layers)


def load_backbone(path_or_hub_id: str | os.PathLike, num_layers: int | None = None) -> tuple[Any, dict]:
  """Pretrained weights of any backbone -> (config truncated to num_layers, params NumPy tree).

  The family is read from `config.json`: a stjax checkpoint's `format` ('stjax.gpt2',
  'stjax.llama', 'stjax.bert') or a Hugging Face `model_type` ('gpt2', 'llama', 'bert'). Hub ids
  are downloaded first
  (huggingface_hub; a clear error when offline).
  """
  folder = resolve_folder(path_or_hub_id)
  return LOADERS[family_of(folder)](folder, num_layers)


def family_of(folder: pathlib.Path) -> str:
  """'gpt2' | 'llama' | 'bert': the family of a model folder, from its config.json only (no weights read)."""
  config_path, meta = read_config_json(
    folder, "no config.json (expected a Hugging Face model folder or a stjax checkpoint)"
  )
  fmt = meta.get("format")
  name = fmt[len("stjax.") :] if isinstance(fmt, str) and fmt.startswith("stjax.") else meta.get("model_type")
  if name not in LOADERS:
    raise UserError(
      f"{config_path}: unsupported model (model_type={meta.get('model_type')!r}, "
      f"format={fmt!r}); supported backbones: {', '.join(sorted(LOADERS))}"
    )
  return name
