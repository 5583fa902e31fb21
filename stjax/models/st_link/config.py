"""`config.model` of ST-LINK: every field with its default and a comment (reasons: docs/st_link.md)."""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """`config.model` for ST-LINK; every field documented (docs/st_link.md gives the reasons)."""
  c = ml_collections.ConfigDict()
  c.name = "st_link"
  # Language model (params["llm"]); GPT-2 geometry must match `pretrained` when one is given.
  c.backbone = "gpt2"  # gpt2 | llama (Llama geometry is read from `pretrained`, else Llama 3.2 1B;
  # the GPT-2 geometry fields n_embd .. n_positions below then do not apply). docs/st_link.md.
  c.pretrained = ""  # converted stjax checkpoint folder, HF folder or hub id ("gpt2"); "" = random init.
  c.llm_layers = 6  # LLM blocks kept (the first llm_layers of the pretrained model).
  c.unfrozen_layers = 2  # U: PFA trains attention in the last U blocks; MRFFN default sits there.
  c.trainable = "pfa(2)"  # trainability policy for stjax.train.optim; pfa(U) must use U = unfrozen_layers.
  c.n_embd = 768  # model width d (GPT-2 small: 768).
  c.n_head = 12  # attention heads (GPT-2 small: 12, head dim 64).
  c.vocab_size = 50257  # rows of wte (unused with inputs_embeds; kept so checkpoints fit).
  c.n_positions = 1024  # rows of wpe (used only by the no-SE ablation, indexed by patch).
  c.dropout = 0.1  # GPT-2 embedding and residual dropout (Llama has none).
  c.attention_dropout = (
    0.0  # dropout on attention probabilities; > 0 rules out the blockwise linear-memory path.
  )
  c.dtype = "float32"  # compute dtype of the LLM: float32 | bfloat16 (params stay float32).
  c.remat = "none"  # LLM blocks rematerialised in the backward: none | block (keep matmul outputs) |
  # full (keep only block inputs) | a jax.checkpoint_policies name; a memory lever (docs/scaling.md).
  # Tokens.
  c.patch_len = 3  # steps per patch; must divide T_in (12 -> 4 patches; ST-SSL's 19 steps need 1).
  c.embed_dim = 64  # width of the time-of-day, day-of-week and node embeddings.
  c.node_emb_init = "xavier"  # xavier | laplacian (graph Laplacian eigenvectors; needs an adjacency).
  # SE-Attention.
  c.se_attention = True  # rotary time + space positions; False = by patch index (ablation): GPT-2 wpe,
  # Llama its own RoPE.
  c.se_mode = "split"  # split (head dims shared between time and space) | dual (two attentions).
  c.temporal_dims = 32  # split: time-rotated dims per head (even; default half of head dim 64).
  c.rope_base = 10000.0  # RoPE base of omega_j (space phases; GPT-2 time angles; Llama time angles use
  # the backbone's own rotary frequencies).
  c.causal = False  # causal mask over the N*P token sequence (ST-LLM-style ablation); False = full.
  # MRFFN.
  c.mrffn = True  # add memory retrieval + mixture of experts to the MLP of `mrffn_layers`.
  c.mrffn_layers = ()  # block indices with MRFFN; () = the last `unfrozen_layers` blocks.
  c.memory_size = 64  # M memory slots per MRFFN layer (sweep: 16, 64, 256).
  c.memory_key_dim = 64  # width of queries and keys.
  c.memory_top_k = 4  # slots read per token.
  c.memory_tau = 0.1  # softmax temperature over the top-k cosines.
  c.memory_alpha = 0.1  # EMA rate of the key update (sweep: 0.05, 0.1, 0.2).
  c.memory_reseed_after = 0  # re-seed a slot unused for this many training steps; 0 = never.
  c.num_experts = 4  # E small expert FFNs.
  c.expert_top_k = 2  # experts per token.
  c.expert_hidden = 256  # hidden width of each expert.
  c.moe_aux_weight = 0.01  # weight of the Switch load-balancing loss in aux_loss.
  # Output.
  c.revin = True  # reversible instance normalisation of the input; outputs de-normalised.
  c.revin_affine = True  # learnable per-feature affine in RevIN.
  return c
