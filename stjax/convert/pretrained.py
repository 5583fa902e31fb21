"""Pretrained backbone weights for `config.model.pretrained`: the backbone's config and its weights.

The experiment (stjax.train) reads them here and hands the config to the model builder and the
weights to the initialised params; models never read files.
"""

from __future__ import annotations

import pathlib
from typing import Any

from stjax.convert import hf_bert, hf_gpt2, hf_llama
from stjax.convert.backbones import LOADERS, family_of
from stjax.convert.hf_common import resolve_folder
from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY

# Families whose model config is read from the checkpoint: folder -> config.
READERS = {"llama": hf_llama.CONVERTER.read_config, "bert": hf_bert.CONVERTER.read_config}


def backbone_config_of(model_config) -> Any:
  """The full config of `model.pretrained` when its family takes its geometry from the checkpoint
  (Llama, BERT), after checking a local folder is of `config.model.backbone`'s family; None when
  there is nothing to read (GPT-2's geometry is the model config's). A hub id is read only for
  Llama and BERT (downloaded, as the trainer would)."""
  name = model_config.get("backbone", "gpt2")
  source = model_config.get("pretrained", "")
  if not source or (name == "gpt2" and not pathlib.Path(source).expanduser().is_dir()):
    return None
  folder = resolve_folder(source)
  family = family_of(folder)
  if family != name:
    raise UserError(
      f"config.model.backbone: is {name!r} but config.model.pretrained={source} is a {family} model"
    )
  return READERS[name](folder) if name in READERS else None


def merge_pretrained(model_config, params: Any) -> dict:
  """Copies pretrained backbone weights into `params["llm"]`, checking geometry and shapes.

  Args:
    model_config: `config.model` (`pretrained`, `llm_layers`, `n_embd`, `n_head`, ...).
    params: the model's freshly initialised params (dict with an `llm` subtree).
  Returns: a new params dict; leaves the checkpoint lacks (SE merge, MRFFN, LoRA) keep their init.
  """
  source = model_config.get("pretrained", "")
  if not source:
    raise UserError("config.model.pretrained: empty, nothing to load")
  if LLM_KEY not in params:
    raise UserError(
      f"config.model.name={model_config.name}: the model has no params['{LLM_KEY}'] to load GPT-2 into"
    )
  name = model_config.get("backbone", "gpt2")
  if name in READERS:  # geometry is checked leaf by leaf below
    _, loaded = LOADERS[name](source, num_layers=model_config.llm_layers)
    out = dict(params)
    out[LLM_KEY] = hf_gpt2.overlay(params[LLM_KEY], loaded, where=f"{source} -> params/{LLM_KEY}")
    return out
  loaded_config, loaded = hf_gpt2.load(source, num_layers=model_config.llm_layers)
  for field in ("n_embd", "n_head", "vocab_size", "n_positions"):
    want, got = model_config[field], getattr(loaded_config, field)
    if want != got:
      raise UserError(f"config.model.{field}: is {want} but the pretrained model {source} has {got}")
  out = dict(params)
  out[LLM_KEY] = hf_gpt2.overlay(params[LLM_KEY], loaded, where=f"{source} -> params/{LLM_KEY}")
  return out
