"""Hugging Face GPT-2 <-> stjax GPT-2 params: a name/layout table, small per-tensor hooks.

    from stjax.convert import hf_gpt2
    cfg, params = hf_gpt2.load("gpt2")              # hub id, HF folder or stjax checkpoint folder
    cfg, params = hf_gpt2.load("/ckpt/gpt2", num_layers=6)
    GPT2(cfg).apply({"params": params}, inputs_embeds)

`load` returns params as a nested dict of NumPy float32 arrays with GPT-2 names (see
stjax/models/backbones/gpt2.py). `convert` writes a stjax checkpoint folder (orbax + config.json), `export`
writes an HF folder (`model.safetensors` + `config.json`) that `transformers.GPT2Model.
from_pretrained` loads. No torch is imported: safetensors is read with its NumPy API and
`pytorch_model.bin` with a weights-only unpickler. This module holds the GPT-2 table; the machinery
(reading, checkpoints, hub download, `overlay`) is `stjax.convert.hf_common`'s, shared with Llama.
"""

from __future__ import annotations

import re

from stjax.convert import checkpoint_io
from stjax.convert.hf_common import Converter, Rule, download, overlay  # noqa: F401 (public here too)
from stjax.models.backbones.gpt2 import GPT2Config

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

CONVERTER = Converter(
  name="GPT-2",
  config_cls=GPT2Config,
  layers_field="n_layer",
  block_prefix="h",
  global_rules=GLOBAL_RULES,
  block_rules=BLOCK_RULES,
  ignored=IGNORED,
  hf_prefix=HF_PREFIX,
  fmt=checkpoint_io.FORMAT,
)

# The public API (see `Converter` for each): load(path_or_hub_id, num_layers=None) -> (GPT2Config,
# params) from a stjax checkpoint, an HF folder or a hub id ("gpt2"); convert(source, output,
# num_layers=None); export(config, params, output); to_hf_tensors / from_hf_tensors (in memory, HF
# GPT2Model names); read_hf_folder(folder, num_layers=None); rules(config) (the full table).
rules = CONVERTER.rules
load = CONVERTER.load
read_hf_folder = CONVERTER.read_hf_folder
from_hf_tensors = CONVERTER.from_hf_tensors
convert = CONVERTER.convert
to_hf_tensors = CONVERTER.to_hf_tensors
export = CONVERTER.export
