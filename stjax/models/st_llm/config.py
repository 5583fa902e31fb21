"""`config.model` of ST-LLM: every field with its default and a comment."""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """`config.model` for ST-LLM; every field documented. Defaults = the released code + paper."""
  c = ml_collections.ConfigDict()
  c.name = "st_llm"
  c.pretrained = ""  # converted stjax checkpoint folder, HF folder or hub id ("gpt2"); "" = random init.
  c.llm_layers = 6  # GPT-2 blocks kept (paper: 6).
  c.unfrozen_layers = 2  # U of PFA (paper's best: 2 for NYCTaxi, 1 for CHBike).
  c.trainable = "pfa(2)"  # trainability policy for stjax.train.optim; pfa(U) must use U = unfrozen_layers.
  c.n_embd = 768  # GPT-2 width (GPT-2 small: 768 = 3 x embed_dim in the released code).
  c.n_head = 12  # attention heads.
  c.vocab_size = 50257  # rows of wte (unused with inputs_embeds; kept so checkpoints fit).
  c.n_positions = 1024  # rows of wpe; positions are node indices, so N <= n_positions.
  c.dropout = 0.1  # GPT-2 embedding and residual dropout (HF default, kept by ST-LLM).
  c.attention_dropout = 0.1  # GPT-2 attention-probability dropout (HF default, kept by ST-LLM).
  c.dtype = "float32"  # compute dtype of GPT-2: float32 | bfloat16.
  c.remat = "none"  # LLM blocks rematerialised in the backward: none | block (keep matmul outputs) |
  # full (keep only block inputs) | a jax.checkpoint_policies name; a memory lever (docs/scaling.md).
  c.embed_dim = 256  # D = gpt_channel: width of E_P, E_T and E_S.
  c.causal = True  # ST-LLM keeps GPT-2's causal mask (node i sees nodes <= i).
  return c
