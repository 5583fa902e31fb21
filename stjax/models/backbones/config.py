"""The backbone config of stjax models, built from `config.model` (GPT-2, Llama or BERT).

Every LLM-backed model (ST-LINK, ST-LLM, STH-SepNet) keeps GPT-2 under `params["llm"]` and reads
the same config fields: `llm_layers`, `n_embd`, `n_head`, `vocab_size`, `n_positions`, `dropout`,
`attention_dropout`, `dtype`, `pretrained`. `model.pretrained` is a converted stjax checkpoint
folder, a Hugging Face folder or a hub id; its weights are read by `stjax.convert.pretrained`
(models never read files). Empty = random init, which `warn_if_random` announces, since the
published results all start from pretrained weights.
"""

from __future__ import annotations

import warnings
from typing import Any

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.models.backbones.bert import BertConfig
from stjax.models.backbones.gpt2 import GPT2Config
from stjax.models.backbones.llama import LlamaConfig

LLM_KEY = "llm"  # params[LLM_KEY]: the language model of every LLM-backed model.
# Families whose geometry comes from the pretrained checkpoint: config class, name of its default.
BACKBONE_DEFAULTS = {"llama": (LlamaConfig, "Llama 3.2 1B"), "bert": (BertConfig, "bert-base-uncased")}


def llm_config(
  model_config,
  *,
  causal: bool,
  use_wpe: bool,
  attention_dropout: float | None = None,
  kernels: Kernels = Kernels(),
) -> GPT2Config:
  """The GPT2Config of a model: geometry and dropout from `model_config`, masks from the caller.

  Args:
    model_config: `config.model` with llm_layers, n_embd, n_head, vocab_size, n_positions,
      dropout (embedding and residual dropout), attention_dropout, dtype.
    causal: causal attention mask.
    use_wpe: add GPT-2's learned position table to the inputs.
    attention_dropout: overrides `model_config.attention_dropout` when given.
    kernels: the run's resolved kernel choices.
  """
  mc = model_config
  if mc.llm_layers < 1:
    raise UserError(f"config.model.llm_layers: must be >= 1, got {mc.llm_layers}")
  for field in ("dropout", "attention_dropout"):
    if not 0.0 <= mc[field] < 1.0:
      raise UserError(f"config.model.{field}: must be in [0, 1), got {mc[field]}")
  return GPT2Config(
    vocab_size=mc.vocab_size,
    n_positions=mc.n_positions,
    n_embd=mc.n_embd,
    n_layer=mc.llm_layers,
    n_head=mc.n_head,
    embd_pdrop=mc.dropout,
    resid_pdrop=mc.dropout,
    attn_pdrop=mc.attention_dropout if attention_dropout is None else attention_dropout,
    use_wpe=use_wpe,
    causal=causal,
    dtype=mc.dtype,
    kernels=kernels,
    remat=mc.get("remat", "none"),
  )


def backbone_config(
  model_config,
  *,
  causal: bool,
  use_wpe: bool,
  attention_dropout: float | None = None,
  kernels: Kernels = Kernels(),
  pretrained_config: Any = None,
):
  """The backbone config selected by `config.model.backbone` (absent = "gpt2").

  "gpt2": `llm_config` above (geometry from the model config; checked against `pretrained` when
  the weights are merged). "llama": the geometry of `pretrained_config` (the pretrained model's
  config, read by `stjax.convert.pretrained.backbone_config_of`:
  width, heads, K/V heads, SwiGLU width, vocab, RoPE theta and scaling), or Llama 3.2 1B
  (`LlamaConfig` defaults: width 2048, 32 heads, 8 K/V heads, SwiGLU 8192, vocab 128256) when
  `pretrained` is empty; truncated to `llm_layers` blocks, with the model's dtype and attention
  dropout. GPT-2's geometry fields and `use_wpe` do not apply to Llama (its positions are rotary).
  "bert": likewise from the pretrained BERT's config (bert-base, `BertConfig` defaults: width 768,
  12 heads, FFN 3072, vocab 30522, 512 positions, when `pretrained` names weights that were not
  read); a random BERT (`pretrained` empty) takes its geometry from the model config instead:
  width `n_embd`, `n_head` heads, FFN 4 x `n_embd`, `vocab_size` word rows, `n_positions` position
  rows. BERT is an encoder, so its attention is bidirectional whatever `causal` asks; `dropout` is
  its hidden dropout.
  A local `pretrained` folder of another family is a UserError naming config.model.backbone.
  Used by every LLM-backed model (ST-LINK, STH-SepNet).
  """
  name = model_config.get("backbone", "gpt2")
  if name not in BACKBONE_DEFAULTS and name != "gpt2":
    raise UserError(f"config.model.backbone: {name!r} is not one of gpt2, {', '.join(BACKBONE_DEFAULTS)}")
  if name == "gpt2":
    return llm_config(
      model_config, causal=causal, use_wpe=use_wpe, attention_dropout=attention_dropout, kernels=kernels
    )
  gpt2 = llm_config(model_config, causal=causal, use_wpe=False, attention_dropout=attention_dropout)
  default_cls, default_name = BACKBONE_DEFAULTS[name]
  if pretrained_config is not None:
    base = pretrained_config
  elif name == "bert" and not model_config.get("pretrained", ""):
    base = random_bert_geometry(gpt2)
  else:
    base = default_cls()
  if gpt2.n_layer > base.num_hidden_layers:
    raise UserError(
      f"config.model.llm_layers: {gpt2.n_layer} exceeds the {base.num_hidden_layers} blocks of "
      f"{model_config.get('pretrained', '') or default_name}"
    )
  if name == "bert":
    return base.replace(
      num_hidden_layers=gpt2.n_layer,
      attention_probs_dropout_prob=gpt2.attn_pdrop,
      hidden_dropout_prob=gpt2.resid_pdrop,
      causal=False,
      dtype=gpt2.dtype,
      lora_rank=0,
      lora_alpha=None,
      kernels=kernels,
      remat=gpt2.remat,
    )
  return base.replace(
    num_hidden_layers=gpt2.n_layer,
    attention_dropout=gpt2.attn_pdrop,
    causal=causal,
    dtype=gpt2.dtype,
    lora_rank=0,
    lora_alpha=None,
    kernels=kernels,
    remat=gpt2.remat,
  )


def random_bert_geometry(gpt2: GPT2Config) -> BertConfig:
  """The BERT of a random-init model: the geometry the model config gives (as `llm_config` read it)."""
  return BertConfig(
    vocab_size=gpt2.vocab_size,
    hidden_size=gpt2.n_embd,
    num_attention_heads=gpt2.n_head,
    intermediate_size=4 * gpt2.n_embd,
    max_position_embeddings=gpt2.n_positions,
  )


def check_pfa(mc) -> None:
  """unfrozen_layers within the model, and a pfa(U) policy consistent with it."""
  if not 0 <= mc.unfrozen_layers <= mc.llm_layers:
    raise UserError(
      f"config.model.unfrozen_layers: {mc.unfrozen_layers} not in 0..llm_layers={mc.llm_layers}"
    )
  policy = str(mc.get("trainable", "")).replace(" ", "")
  if policy.startswith("pfa(") and policy != f"pfa({mc.unfrozen_layers})":
    raise UserError(
      f"config.model.trainable: {mc.trainable} disagrees with unfrozen_layers={mc.unfrozen_layers}"
    )


def warn_if_random(model_config) -> None:
  """Warns (once per build) when the language model will start from random weights."""
  if not model_config.get("pretrained", ""):
    warnings.warn(
      f"config.model.pretrained is empty: {model_config.name} starts its "
      f"{model_config.get('backbone', 'gpt2')} language model from RANDOM weights. "
      "Fine for tests, smoke runs and sizing; results comparable to the papers need pretrained weights "
      "(set config.model.pretrained to a hub id such as 'gpt2', an HF folder or a converted checkpoint).",
      UserWarning,
      stacklevel=2,
    )
