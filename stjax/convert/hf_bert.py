"""Hugging Face BERT <-> stjax BERT params: a name/layout table, small per-tensor hooks.

    from stjax.convert import hf_bert
    cfg, params = hf_bert.load("/models/all-MiniLM-L6-v2")   # HF folder, hub id or stjax checkpoint
    cfg, params = hf_bert.load("bert-base-uncased", num_layers=6)
    Bert(cfg).apply({"params": params}, inputs_embeds, attention_mask=mask)

Same machinery as `stjax.convert.hf_gpt2` and `hf_llama`, shared in `stjax.convert.hf_common`
(safetensors, sharded index or a weights-only `pytorch_model.bin` reader; hub download; atomic
orbax + config.json checkpoints). The table: HF `nn.Linear.weight` [out, in] is transposed to
kernels [in, out] both ways, LayerNorm `weight` maps to `scale`, `nn.Embedding.weight` to
`embedding`. Task-head checkpoints (BertForMaskedLM, BertForPreTraining, ...) store the trunk
under `bert.`; their heads (`cls.*`), the pooler and the `position_ids` buffer are not read, and
the legacy `LayerNorm.gamma` / `LayerNorm.beta` names of old checkpoints (`bert-base-uncased`)
are read as `weight` / `bias`, as transformers does. `export` writes no pooler:
`BertModel.from_pretrained` initialises one afresh (and says so) unless given
`add_pooling_layer=False`; the last hidden state does not depend on it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np

from stjax.convert.hf_common import Converter, Rule
from stjax.models.backbones.bert import BertConfig

FORMAT = "stjax.bert"  # `format` of a stjax BERT checkpoint's config.json


def _linear_to_stjax(x: np.ndarray) -> np.ndarray:
  """HF Linear weight [out, in] -> kernel [in, out], float32."""
  return np.ascontiguousarray(np.asarray(x, dtype=np.float32).T)


_linear_to_hf = _linear_to_stjax  # the transpose is its own inverse


def _linear(hf: str, path: tuple[str, ...], out_dim, in_dim) -> tuple[Rule, Rule]:
  """The weight (transposed) and bias rules of one HF nn.Linear."""
  return (
    Rule(
      f"{hf}.weight", path + ("kernel",), lambda c: (out_dim(c), in_dim(c)), _linear_to_stjax, _linear_to_hf
    ),
    Rule(f"{hf}.bias", path + ("bias",), lambda c: (out_dim(c),)),
  )


def _layer_norm(hf: str, path: tuple[str, ...]) -> tuple[Rule, Rule]:
  return (
    Rule(f"{hf}.weight", path + ("scale",), lambda c: (c.hidden_size,)),
    Rule(f"{hf}.bias", path + ("bias",), lambda c: (c.hidden_size,)),
  )


def _d(c: BertConfig) -> int:
  return c.hidden_size


def _mlp(c: BertConfig) -> int:
  return c.intermediate_size


# Shapes are HF's (Linear [out, in]).
GLOBAL_RULES = (
  Rule(
    "embeddings.word_embeddings.weight",
    ("embeddings", "word_embeddings", "embedding"),
    lambda c: (c.vocab_size, c.hidden_size),
  ),
  Rule(
    "embeddings.position_embeddings.weight",
    ("embeddings", "position_embeddings", "embedding"),
    lambda c: (c.max_position_embeddings, c.hidden_size),
  ),
  Rule(
    "embeddings.token_type_embeddings.weight",
    ("embeddings", "token_type_embeddings", "embedding"),
    lambda c: (c.type_vocab_size, c.hidden_size),
  ),
  *_layer_norm("embeddings.LayerNorm", ("embeddings", "LayerNorm")),
)
_L = "encoder.layer.{i}"
BLOCK_RULES = (
  *_linear(f"{_L}.attention.self.query", ("attention", "self", "query"), _d, _d),
  *_linear(f"{_L}.attention.self.key", ("attention", "self", "key"), _d, _d),
  *_linear(f"{_L}.attention.self.value", ("attention", "self", "value"), _d, _d),
  *_linear(f"{_L}.attention.output.dense", ("attention", "output", "dense"), _d, _d),
  *_layer_norm(f"{_L}.attention.output.LayerNorm", ("attention", "output", "LayerNorm")),
  *_linear(f"{_L}.intermediate.dense", ("intermediate", "dense"), _mlp, _d),
  *_linear(f"{_L}.output.dense", ("output", "dense"), _d, _mlp),
  *_layer_norm(f"{_L}.output.LayerNorm", ("output", "LayerNorm")),
)
# In HF BERT checkpoints but not weights of the trunk: task heads, the pooler, the positions buffer.
IGNORED = re.compile(r"^(cls\..*|pooler\..*|embeddings\.position_ids)$")
HF_PREFIX = "bert."  # BertForMaskedLM & co. save the trunk under this prefix
_LEGACY = re.compile(r"LayerNorm\.(gamma|beta)$")


def _rename(name: str) -> str:
  """Old checkpoints' LayerNorm.gamma / LayerNorm.beta -> LayerNorm.weight / LayerNorm.bias."""
  return _LEGACY.sub(lambda m: "LayerNorm." + {"gamma": "weight", "beta": "bias"}[m.group(1)], name)


def _stjax_shape(rule: Rule, config: BertConfig) -> tuple[int, ...]:
  """stjax leaf shape: projection kernels are the transposed HF Linear weights."""
  want = rule.shape(config)
  return want[::-1] if rule.to_stjax is _linear_to_stjax else want


def is_bert(folder: str | os.PathLike) -> bool:
  """True when folder/config.json names a BERT: a stjax BERT checkpoint or HF model_type 'bert'."""
  try:
    meta = json.loads((pathlib.Path(folder) / "config.json").read_text())
  except (OSError, json.JSONDecodeError):
    return False
  return isinstance(meta, dict) and (meta.get("format") == FORMAT or meta.get("model_type") == "bert")


CONVERTER = Converter(
  name="BERT",
  config_cls=BertConfig,
  layers_field="num_hidden_layers",
  block_prefix="layer",
  global_rules=GLOBAL_RULES,
  block_rules=BLOCK_RULES,
  ignored=IGNORED,
  hf_prefix=HF_PREFIX,
  fmt=FORMAT,
  stjax_shape=_stjax_shape,
  rename=_rename,
)

# The public API (see `Converter` for each): load(path_or_hub_id, num_layers=None) -> (BertConfig,
# params) from a stjax BERT checkpoint, an HF folder or a hub id; convert(source, output,
# num_layers=None); export(config, params, output); to_hf_tensors / from_hf_tensors (in memory,
# HF BertModel names); read_hf_folder(folder, num_layers=None); rules(config) (the full table).
rules = CONVERTER.rules
load = CONVERTER.load
read_hf_folder = CONVERTER.read_hf_folder
from_hf_tensors = CONVERTER.from_hf_tensors
convert = CONVERTER.convert
to_hf_tensors = CONVERTER.to_hf_tensors
export = CONVERTER.export
