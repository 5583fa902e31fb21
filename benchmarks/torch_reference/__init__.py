"""PyTorch reference implementations for side-by-side benchmarks (not part of the stjax package).

- `st_llm.STLLM`: ST-LLM as its released code builds it (Hugging Face `GPT2Model`, node tokens,
  causal mask, learned positions, partially frozen attention), written from the paper and
  docs/published_code.md.
- `st_link.STLink`: the ST-LINK architecture as docs/design.md defines it (patch
  tokens, SE-Attention with temporal + spatial rotary, MRFFN with top-k memory and a top-2 mixture
  of experts, RevIN), on our own torch GPT-2 blocks.
- `weights.load_stjax_params`: copies a stjax parameter tree (and memory state) into either model, so
  both frameworks start from the same initialisation; the parity tests prove the forward passes agree.

Both take the stjax batch dict (`x` [B, T_in, N, C_in], `tod` [B, T_in], `dow` [B, T_in]) as torch
tensors and return `(pred [B, T_out, N, C_out], aux_loss scalar)`.
"""


def build_reference(model_config, spec, kernels=None):
  """The torch reference for a stjax `config.model`, `DataSpec` and resolved `stjax.kernels.Kernels`
  (same sizes, same switches; experts dense where stjax's are)."""
  name = model_config.name
  if name == "st_llm":
    from benchmarks.torch_reference import st_llm

    return st_llm.from_config(model_config, spec)
  if name == "st_link":
    from benchmarks.torch_reference import st_link

    return st_link.from_config(model_config, spec, kernels)
  raise ValueError(f"no PyTorch reference for model {name!r} (have: st_llm, st_link)")
