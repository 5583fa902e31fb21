"""Hugging Face Llama <-> stjax Llama params: a name/layout table, small per-tensor hooks.

    from stjax.convert import hf_llama
    cfg, params = hf_llama.load("meta-llama/Llama-3.2-1B")   # hub id, HF folder or stjax checkpoint
    cfg, params = hf_llama.load("/ckpt/llama-1b", num_layers=8)
    Llama(cfg).apply({"params": params}, inputs_embeds)

Same machinery as `stjax.convert.hf_gpt2`, shared in `stjax.convert.hf_common` (weights read with
safetensors' NumPy API, sharded index included, or a weights-only `pytorch_model.bin` reader; hub
download; atomic orbax + config.json checkpoints). Only the table differs: HF `nn.Linear.weight`
is [out, in], stjax kernels are [in, out], so every projection is transposed both ways; RMSNorm
weights map to `scale`.
The trunk has no LM head: `lm_head.weight` (untied models) is not read, and rotary `inv_freq`
buffers of old checkpoints are ignored (they are recomputed from the config).
"""

from __future__ import annotations

import re

import numpy as np

from stjax.convert.hf_common import Converter, Rule
from stjax.models.backbones.llama import LlamaConfig

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
  Rule(
    "layers.{i}.post_attention_layernorm.weight",
    ("post_attention_layernorm", "scale"),
    lambda c: (c.hidden_size,),
  ),
  _linear("layers.{i}.mlp.gate_proj.weight", ("mlp", "gate_proj"), _mlp, _d),
  _linear("layers.{i}.mlp.up_proj.weight", ("mlp", "up_proj"), _mlp, _d),
  _linear("layers.{i}.mlp.down_proj.weight", ("mlp", "down_proj"), _d, _mlp),
)
# In some HF checkpoints but not weights of the trunk: the LM head, old rotary buffers.
IGNORED = re.compile(r"^(lm_head\.weight|layers\.\d+\.self_attn\.rotary_emb\.inv_freq)$")
HF_PREFIX = "model."  # LlamaForCausalLM & co. save the trunk under this prefix


def _stjax_shape(rule: Rule, config: LlamaConfig) -> tuple[int, ...]:
  """stjax leaf shape: projection kernels are the transposed HF Linear weights."""
  want = rule.shape(config)
  return want[::-1] if rule.to_stjax is _linear_to_stjax else want


CONVERTER = Converter(
  name="Llama",
  config_cls=LlamaConfig,
  layers_field="num_hidden_layers",
  block_prefix="layers",
  global_rules=GLOBAL_RULES,
  block_rules=BLOCK_RULES,
  ignored=IGNORED,
  hf_prefix=HF_PREFIX,
  fmt=FORMAT,
  stjax_shape=_stjax_shape,
)

# The public API (see `Converter` for each): load(path_or_hub_id, num_layers=None) -> (LlamaConfig,
# params) from a stjax Llama checkpoint, an HF folder or a hub id ("meta-llama/Llama-3.2-1B"; gated
# on the hub: log in with `hf auth login` first); convert(source, output, num_layers=None);
# export(config, params, output); to_hf_tensors(config, params) (HF LlamaModel names);
# read_hf_folder(folder, num_layers=None); rules(config) (the full table).
rules = CONVERTER.rules
load = CONVERTER.load
read_hf_folder = CONVERTER.read_hf_folder
convert = CONVERTER.convert
to_hf_tensors = CONVERTER.to_hf_tensors
export = CONVERTER.export
