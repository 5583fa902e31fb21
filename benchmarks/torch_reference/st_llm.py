"""ST-LLM in PyTorch, as its released code builds it (docs/published_code.md).

- Token embedding: per node, the T_in steps x (input channels + time of day + day of week) are
  flattened and mapped by a linear layer (the released 1x1 Conv2d over 36 channels) to D = d / 3.
- Temporal embedding: learnable time-of-day [steps_per_day, D] and day-of-week [7, D] tables, looked
  up at the LAST input step and added.
- Spatial embedding: a free learnable node table [N, D].
- Fusion: concat [E_P, E_T, E_S] (d) -> linear d -> d ("FConv", no activation).
- LLM: Hugging Face `GPT2Model` on `inputs_embeds` (tokens = nodes), causal mask, learned wpe
  (node index = position), GPT-2's dropouts; output after ln_f.
- Head: linear d -> T_out * C_out per node.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config as HFGPT2Config
from transformers import GPT2Model

from benchmarks.torch_reference import weights


class STLLM(nn.Module):
  """Args:
  num_nodes, input_len, in_channels, output_len, out_channels, steps_per_day: data shape.
  gpt2: a stjax `GPT2Config` (width, heads, layers, dropouts); its HF twin is built.
  token_features: D, width of each of the three embeddings (d / 3 in the paper).
  """

  def __init__(
    self,
    *,
    num_nodes: int,
    input_len: int,
    in_channels: int,
    output_len: int,
    out_channels: int,
    steps_per_day: int,
    gpt2,
    token_features: int,
  ):
    super().__init__()
    self.steps_per_day, self.output_len, self.out_channels = steps_per_day, output_len, out_channels
    self.start = nn.Linear(input_len * (in_channels + 2), token_features)
    self.time_day = nn.Parameter(torch.empty(steps_per_day, token_features))
    self.time_week = nn.Parameter(torch.empty(7, token_features))
    self.node_emb = nn.Parameter(torch.empty(num_nodes, token_features))
    for p in (self.time_day, self.time_week, self.node_emb):
      nn.init.xavier_uniform_(p)
    self.fusion = nn.Linear(3 * token_features, gpt2.n_embd)
    # No token ids are ever used (inputs are embeddings): drop GPT-2's bos/eos ids so small vocabularies validate.
    hf = HFGPT2Config(**{**gpt2.to_hf(), "bos_token_id": None, "eos_token_id": None})
    hf._attn_implementation = "sdpa"
    self.llm = GPT2Model(hf)
    self.head = nn.Linear(gpt2.n_embd, output_len * out_channels)

  def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """batch: x [B, T, N, C], tod [B, T], dow [B, T] -> (pred [B, T_out, N, C_out], aux 0)."""
    x, tod, dow = batch["x"], batch["tod"], batch["dow"]
    b, t, n, _ = x.shape
    cal = torch.stack([tod, dow.to(x.dtype)], dim=-1)[:, :, None, :].expand(b, t, n, 2)
    feats = torch.cat([x, cal], dim=-1).permute(0, 2, 1, 3).reshape(b, n, -1)  # [B, N, T*(C+2)]
    e_p = self.start(feats)
    tod_idx = torch.clamp((tod[:, -1] * self.steps_per_day).floor().long(), 0, self.steps_per_day - 1)
    dow_idx = torch.clamp(dow[:, -1].long(), 0, 6)
    e_t = (self.time_day[tod_idx] + self.time_week[dow_idx])[:, None, :].expand(b, n, -1)
    e_s = self.node_emb[None].expand(b, n, -1)
    h = self.fusion(torch.cat([e_p, e_t, e_s], dim=-1))
    h = self.llm(inputs_embeds=h).last_hidden_state
    out = self.head(h).reshape(b, n, self.output_len, self.out_channels).permute(0, 2, 1, 3)
    return out, out.new_zeros(())

  def name_map(self) -> dict[str, tuple[str, str]]:
    """torch name -> (stjax path, layout) for `weights.load_stjax_params`."""
    m = {
      "time_day": ("params/calendar/time_day", "same"),
      "time_week": ("params/calendar/time_week", "same"),
      "node_emb": ("params/nodes/node_emb", "same"),
    }
    m.update(weights.dense_map("start", "params/start_conv"))
    m.update(weights.dense_map("fusion", "params/feature_fusion"))
    m.update(weights.dense_map("head", "params/regression_layer"))
    m["llm.wte.weight"] = ("params/llm/wte/embedding", "same")
    m["llm.wpe.weight"] = ("params/llm/wpe/embedding", "same")
    m.update(weights.gpt2_block_map("llm.", "params/llm", self.llm.config.n_layer))
    return m

  def unused_stjax(self) -> tuple[str, ...]:
    return ()


def from_config(mc, spec) -> STLLM:
  """The torch ST-LLM for a stjax `config.model` and DataSpec (same GPT-2 geometry and dropouts)."""
  from stjax.models.backbones.config import llm_config

  gpt2 = llm_config(mc, causal=mc.causal, use_wpe=True)
  if not mc.causal:
    raise ValueError("torch reference: ST-LLM is built with GPT-2's causal mask only")
  return STLLM(
    num_nodes=spec.num_nodes,
    input_len=spec.input_len,
    in_channels=spec.in_channels,
    output_len=spec.output_len,
    out_channels=spec.out_channels,
    steps_per_day=spec.steps_per_day,
    gpt2=gpt2,
    token_features=mc.embed_dim,
  )
