"""ST-LINK in PyTorch, written from docs/design.md and docs/st_link.md (the reference for benchmarks).

Architecture (the same design stjax builds; every size comes from the stjax model config):

- RevIN over time per (sample, node, feature), learnable affine per feature; predictions are
  de-normalised with the same statistics.
- Patch tokens: each node's window is cut into P = T_in / patch_len patches; a token is
  Linear(concat[patch values, time-of-day emb, day-of-week emb, node emb]) -> d. N * P tokens.
- GPT-2 blocks (pre-LN, fused q|k|v, tanh GELU) whose attention is SE-Attention: per head, the first
  `temporal_dims` dims get RoPE at the time offset of the patch's last step, the rest get spatial
  RoPE with per-node phases phi[n, j] = Linear(e_n)[j] * omega_j. Full (non-causal) attention through
  `scaled_dot_product_attention`.
- MRFFN added to the pretrained MLP in the upper blocks: cosine top-k read of a key-value memory
  (keys a buffer, moved by EMA towards the queries that selected them in training), z = [h, r, a],
  top-2 of E GELU experts with a Switch-style balance loss.
- Head: per node, the P token outputs flattened -> Linear -> (T_out, C_out), RevIN de-norm.

Pieces are small modules so `weights.py` can map the stjax tree onto them name by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
  """GPT-2's `gelu_new` = jax.nn.gelu(approximate=True)."""
  return F.gelu(x, approximate="tanh")


def rope_frequencies(dim: int, base: float = 10000.0) -> torch.Tensor:
  """omega_j = base^(-2j/dim), j < dim/2: [dim // 2]."""
  return base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
  """Rotate-half RoPE: pairs (x[j], x[j + dim/2]) turned by angles[j]. x: [..., dim]."""
  half = x.shape[-1] // 2
  cos, sin = torch.cos(angles), torch.sin(angles)
  x1, x2 = x[..., :half], x[..., half:]
  return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Conv1D(nn.Module):
  """HF GPT-2 Conv1D: y = x @ weight + bias with weight [in, out] (the stjax kernel layout)."""

  def __init__(self, n_in: int, n_out: int):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
    self.bias = nn.Parameter(torch.zeros(n_out))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


class SEAttention(nn.Module):
  """GPT-2 attention (c_attn, c_proj) with optional rotary q/k.

  `rotary(q, k)` is a callable given per forward (None = plain GPT-2 attention).
  """

  def __init__(self, d: int, n_head: int, attn_pdrop: float, resid_pdrop: float, causal: bool):
    super().__init__()
    self.n_head, self.head_dim = n_head, d // n_head
    self.c_attn = Conv1D(d, 3 * d)
    self.c_proj = Conv1D(d, d)
    self.attn_pdrop, self.causal = attn_pdrop, causal
    self.resid_dropout = nn.Dropout(resid_pdrop)

  def forward(self, h: torch.Tensor, rotary=None) -> torch.Tensor:
    b, s, d = h.shape
    q, k, v = self.c_attn(h).split(d, dim=-1)
    shape = (b, s, self.n_head, self.head_dim)
    q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
    if rotary is not None:
      q, k = rotary(q, k)
    o = F.scaled_dot_product_attention(
      q.transpose(1, 2),
      k.transpose(1, 2),
      v.transpose(1, 2),
      dropout_p=self.attn_pdrop if self.training else 0.0,
      is_causal=self.causal,
    )
    return self.resid_dropout(self.c_proj(o.transpose(1, 2).reshape(b, s, d)))


class MLP(nn.Module):
  def __init__(self, d: int, inner: int, resid_pdrop: float):
    super().__init__()
    self.c_fc = Conv1D(d, inner)
    self.c_proj = Conv1D(inner, d)
    self.dropout = nn.Dropout(resid_pdrop)

  def forward(self, h: torch.Tensor) -> torch.Tensor:
    return self.dropout(self.c_proj(gelu_tanh(self.c_fc(h))))


def _normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
  return x / torch.clamp(torch.linalg.vector_norm(x, dim=-1, keepdim=True), min=eps)


class MemoryRetrieval(nn.Module):
  """Cosine top-k key-value memory; keys are a buffer moved by EMA in training."""

  def __init__(self, d: int, memory_size: int, key_dim: int, top_k: int, tau: float, alpha: float):
    super().__init__()
    self.query = nn.Linear(d, key_dim)
    self.values = nn.Parameter(torch.randn(memory_size, d) * 0.02)
    self.register_buffer("keys", _normalize(torch.randn(memory_size, key_dim)))
    self.top_k, self.tau, self.alpha = top_k, tau, alpha

  def forward(self, h: torch.Tensor) -> torch.Tensor:
    lead = h.shape[:-1]
    q = self.query(h).reshape(-1, self.keys.shape[1])
    cos = _normalize(q) @ _normalize(self.keys).T
    top_cos, idx = torch.topk(cos, self.top_k, dim=-1)
    w = torch.softmax(top_cos / self.tau, dim=-1)
    r = torch.einsum("tk,tkv->tv", w, self.values[idx])
    if self.training:
      self._ema_update(q.detach(), idx)
    return r.reshape(*lead, -1)

  @torch.no_grad()
  def _ema_update(self, q: torch.Tensor, idx: torch.Tensor):
    m = self.keys.shape[0]
    qn = _normalize(q).repeat_interleave(idx.shape[1], dim=0)
    flat = idx.reshape(-1)
    sums = torch.zeros_like(self.keys).index_add_(0, flat, qn)
    counts = torch.zeros(m, dtype=q.dtype, device=q.device).index_add_(
      0, flat, torch.ones_like(flat, dtype=q.dtype)
    )
    mean_q = sums / torch.clamp(counts, min=1.0)[:, None]
    moved = _normalize((1 - self.alpha) * self.keys + self.alpha * mean_q)
    self.keys.copy_(torch.where(counts[:, None] > 0, moved, self.keys))


class ExpertMixture(nn.Module):
  """Top-k of E GELU experts, gated; Switch balance loss E * sum f_e P_e.

  dispatch "dense": all experts on all tokens, zero gates off the top-k (stjax `dense`);
  "loop": the usual eager-PyTorch MoE, per expert the rows that chose it (nonzero, index_select,
  FFN, index_add_), computing only the chosen pairs as stjax's `grouped` dispatch does.
  """

  def __init__(self, dz: int, num_experts: int, top_k: int, hidden: int, d: int, dispatch: str = "dense"):
    super().__init__()
    if dispatch not in ("dense", "loop"):
      raise ValueError(f"torch ExpertMixture: dispatch {dispatch!r} is not dense or loop")
    self.dispatch = dispatch
    self.router = nn.Linear(dz, num_experts)
    self.w1 = nn.Parameter(torch.randn(num_experts, dz, hidden) * 0.02)
    self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
    self.w2 = nn.Parameter(torch.randn(num_experts, hidden, d) * 0.02)
    self.b2 = nn.Parameter(torch.zeros(num_experts, d))
    self.top_k = top_k

  def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = self.w1.shape[0]
    probs = torch.softmax(self.router(z), dim=-1)
    top_p, top_i = torch.topk(probs, self.top_k, dim=-1)
    choice = F.one_hot(top_i, e).to(z.dtype)  # [..., k, E]
    gates = torch.einsum("...k,...ke->...e", top_p / top_p.sum(-1, keepdim=True), choice)
    if self.dispatch == "dense":
      hid = gelu_tanh(torch.einsum("...d,edh->...eh", z, self.w1) + self.b1)
      outs = torch.einsum("...eh,ehf->...ef", hid, self.w2) + self.b2
      out = torch.einsum("...e,...ef->...f", gates, outs)
    else:
      flat = z.reshape(-1, z.shape[-1])
      flat_gates = gates.reshape(-1, e)
      chosen = choice.sum(-2).reshape(-1, e) > 0
      out = flat.new_zeros(flat.shape[0], self.w2.shape[-1])
      for i in range(e):
        rows = torch.nonzero(chosen[:, i]).squeeze(-1)
        if rows.numel():
          y = gelu_tanh(flat.index_select(0, rows) @ self.w1[i] + self.b1[i]) @ self.w2[i] + self.b2[i]
          out = out.index_add(0, rows, y * flat_gates.index_select(0, rows)[:, i : i + 1])
      out = out.reshape(*z.shape[:-1], -1)
    frac = choice.sum(-2).reshape(-1, e).mean(0) / self.top_k
    balance = e * torch.sum(frac * probs.reshape(-1, e).mean(0))
    return out, balance


class MRFFN(nn.Module):
  def __init__(
    self,
    d: int,
    memory_size: int,
    key_dim: int,
    top_k: int,
    tau: float,
    alpha: float,
    num_experts: int,
    expert_top_k: int,
    expert_hidden: int,
    aux_weight: float,
    dispatch: str = "dense",
  ):
    super().__init__()
    self.memory = MemoryRetrieval(d, memory_size, key_dim, top_k, tau, alpha)
    self.experts = ExpertMixture(3 * d, num_experts, expert_top_k, expert_hidden, d, dispatch)
    self.aux_weight = aux_weight

  def forward(self, h: torch.Tensor, attn_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = self.memory(h)
    out, balance = self.experts(torch.cat([h, r, attn_out], dim=-1))
    return out, self.aux_weight * balance


class Block(nn.Module):
  """Pre-LN GPT-2 block; the optional extra FFN's output is added to the MLP's."""

  def __init__(
    self,
    d: int,
    n_head: int,
    inner: int,
    eps: float,
    attn_pdrop: float,
    resid_pdrop: float,
    causal: bool,
    extra_ffn: nn.Module | None = None,
  ):
    super().__init__()
    self.ln_1 = nn.LayerNorm(d, eps=eps)
    self.attn = SEAttention(d, n_head, attn_pdrop, resid_pdrop, causal)
    self.ln_2 = nn.LayerNorm(d, eps=eps)
    self.mlp = MLP(d, inner, resid_pdrop)
    self.extra_ffn = extra_ffn

  def forward(self, x: torch.Tensor, rotary=None) -> tuple[torch.Tensor, torch.Tensor]:
    a = self.attn(self.ln_1(x), rotary)
    x = x + a
    h2 = self.ln_2(x)
    m = self.mlp(h2)
    aux = x.new_zeros(())
    if self.extra_ffn is not None:
      extra, aux = self.extra_ffn(h2, a)
      m = m + extra
    return x + m, aux


def split_rotary(time_angles: torch.Tensor, space_angles: torch.Tensor, temporal_dims: int):
  """SE-Attention `split` mode: per head, dims [:temporal_dims] turned by the time angles
  [seq, td/2], the rest by the space angles [seq, sd/2]. Returns rotary(q, k) for `SEAttention`."""
  t_ang, s_ang = time_angles[:, None, :], space_angles[:, None, :]

  def rotate(x):
    parts = []
    if temporal_dims:
      parts.append(apply_rotary(x[..., :temporal_dims], t_ang))
    if temporal_dims < x.shape[-1]:
      parts.append(apply_rotary(x[..., temporal_dims:], s_ang))
    return torch.cat(parts, dim=-1)

  return lambda q, k: (rotate(q), rotate(k))


def mrffn_map(torch_prefix: str, params_prefix: str, memory_prefix: str) -> dict[str, tuple[str, str]]:
  """torch `MRFFN` at `torch_prefix` <- stjax MRFFN params at `params_prefix` and its memory keys at
  `memory_prefix` (paths start with the collection: "params/...", "memory/...")."""
  from benchmarks.torch_reference import weights

  m = {}
  m.update(weights.dense_map(f"{torch_prefix}.memory.query", f"{params_prefix}/memory/query"))
  m[f"{torch_prefix}.memory.values"] = (f"{params_prefix}/memory/values", "same")
  m[f"{torch_prefix}.memory.keys"] = (f"{memory_prefix}/memory/keys", "same")
  m.update(weights.dense_map(f"{torch_prefix}.experts.router", f"{params_prefix}/experts/router"))
  for name in ("w1", "b1", "w2", "b2"):
    m[f"{torch_prefix}.experts.{name}"] = (f"{params_prefix}/experts/{name}", "same")
  return m


class RevIN(nn.Module):
  """Per (sample, node, feature) normalisation over time; learnable affine per feature."""

  def __init__(self, num_features: int, affine: bool, eps: float = 1e-5):
    super().__init__()
    self.affine, self.eps = affine, eps
    if affine:
      self.weight = nn.Parameter(torch.ones(num_features))
      self.bias = nn.Parameter(torch.zeros(num_features))

  def normalize(self, x: torch.Tensor):
    """x: [B, T, N, F] -> (normalised, (mean, std) each [B, 1, N, F], no gradient)."""
    mean = x.mean(dim=1, keepdim=True).detach()
    std = torch.sqrt(((x - mean) ** 2).mean(dim=1, keepdim=True) + self.eps).detach()
    y = (x - mean) / std
    return (y * self.weight + self.bias if self.affine else y), (mean, std)

  def denormalize(self, y: torch.Tensor, stats, channels: int) -> torch.Tensor:
    mean, std = stats
    if self.affine:
      y = (y - self.bias[:channels]) / (self.weight[:channels] + 1e-10)
    return y * std[..., :channels] + mean[..., :channels]


class STLink(nn.Module):
  """ST-LINK (split SE-Attention or the no-SE ablation; see the module docstring).

  Built by `from_config` with the sizes of a stjax `config.model` and `DataSpec`.
  """

  def __init__(
    self,
    *,
    num_nodes: int,
    input_offsets: tuple[int, ...],
    in_channels: int,
    output_len: int,
    out_channels: int,
    steps_per_day: int,
    gpt2,
    patch_len: int,
    embed_dim: int,
    se_attention: bool,
    temporal_dims: int,
    rope_base: float,
    mrffn_layers: tuple[int, ...],
    mrffn_kwargs: dict,
    revin: bool,
    revin_affine: bool,
  ):
    super().__init__()
    t_in = len(input_offsets)
    self.num_patches, self.patch_len = t_in // patch_len, patch_len
    self.steps_per_day, self.output_len, self.out_channels = steps_per_day, output_len, out_channels
    self.se_attention, self.temporal_dims, self.rope_base = se_attention, temporal_dims, rope_base
    self.mrffn_layers = mrffn_layers
    d, hd = gpt2.n_embd, gpt2.head_dim
    self.time_day = nn.Parameter(torch.empty(steps_per_day, embed_dim))
    self.time_week = nn.Parameter(torch.empty(7, embed_dim))
    self.node_emb = nn.Parameter(torch.empty(num_nodes, embed_dim))
    for p in (self.time_day, self.time_week, self.node_emb):
      nn.init.xavier_uniform_(p)
    self.token_embedding = nn.Linear(patch_len * in_channels + 3 * embed_dim, d)
    self.norm = RevIN(in_channels, revin_affine) if revin else None
    if se_attention:
      self.node_phases = nn.Linear(embed_dim, (hd - temporal_dims) // 2) if hd > temporal_dims else None
    else:
      self.wpe = nn.Parameter(torch.zeros(gpt2.n_positions, d))
    self.h = nn.ModuleList(
      [
        Block(
          d,
          gpt2.n_head,
          gpt2.inner_dim,
          gpt2.layer_norm_epsilon,
          gpt2.attn_pdrop,
          gpt2.resid_pdrop,
          gpt2.causal,
          MRFFN(d, **mrffn_kwargs) if i in mrffn_layers else None,
        )
        for i in range(gpt2.n_layer)
      ]
    )
    self.drop = nn.Dropout(gpt2.embd_pdrop)
    self.ln_f = nn.LayerNorm(d, eps=gpt2.layer_norm_epsilon)
    self.head = nn.Linear(self.num_patches * d, output_len * out_channels)
    last = torch.arange(self.num_patches) * patch_len + patch_len - 1
    self.register_buffer("last_step", last, persistent=False)
    offsets = torch.tensor(input_offsets, dtype=torch.float32)[last]
    self.register_buffer("time_pos", offsets.repeat(num_nodes), persistent=False)  # token s -> patch s % P
    self.register_buffer(
      "token_node", torch.arange(num_nodes).repeat_interleave(self.num_patches), persistent=False
    )

  def rotary(self):
    """The rotation of every token (computed once per forward, shared by all blocks)."""
    hd = self.h[0].attn.head_dim
    td, sd = self.temporal_dims, hd - self.temporal_dims
    time_angles = (
      self.time_pos[:, None] * rope_frequencies(td, self.rope_base).to(self.time_pos.device)
      if td
      else self.time_pos.new_zeros(len(self.time_pos), 0)
    )
    if sd:
      phases = self.node_phases(self.node_emb) * rope_frequencies(sd, self.rope_base).to(self.node_emb.device)
      space_angles = phases[self.token_node]
    else:
      space_angles = self.time_pos.new_zeros(len(self.time_pos), 0)
    return split_rotary(time_angles, space_angles, td)

  def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """batch: x [B, T, N, C], tod [B, T], dow [B, T] -> (pred [B, T_out, N, C_out], aux loss)."""
    x = batch["x"]
    b, t, n, c = x.shape
    p, pl = self.num_patches, self.patch_len
    if self.norm is not None:
      x, stats = self.norm.normalize(x)
    patches = x.permute(0, 2, 1, 3).reshape(b, n, p, pl * c)
    tod, dow = batch["tod"][:, self.last_step], batch["dow"][:, self.last_step]
    tod_idx = torch.clamp((tod * self.steps_per_day).floor().long(), 0, self.steps_per_day - 1)
    e = self.node_emb.shape[1]
    feats = torch.cat(
      [
        patches,
        self.time_day[tod_idx][:, None].expand(b, n, p, e),
        self.time_week[torch.clamp(dow.long(), 0, 6)][:, None].expand(b, n, p, e),
        self.node_emb[None, :, None].expand(b, n, p, e),
      ],
      dim=-1,
    )
    h = self.token_embedding(feats).reshape(b, n * p, -1)
    if self.se_attention:
      rotary = self.rotary()
    else:
      h = h + self.wpe[:p].repeat(n, 1)[None]
      rotary = None
    h = self.drop(h)
    aux = h.new_zeros(())
    for block in self.h:
      h, block_aux = block(h, rotary)
      aux = aux + block_aux
    h = self.ln_f(h)
    out = self.head(h.reshape(b, n, -1))
    pred = out.reshape(b, n, self.output_len, self.out_channels).permute(0, 2, 1, 3)
    if self.norm is not None:
      pred = self.norm.denormalize(pred, stats, self.out_channels)
    return pred, aux

  def name_map(self) -> dict[str, tuple[str, str]]:
    """torch name -> (stjax path, layout) for `weights.load_stjax_params`."""
    from benchmarks.torch_reference import weights

    m = {
      "time_day": ("params/calendar/time_day", "same"),
      "time_week": ("params/calendar/time_week", "same"),
      "node_emb": ("params/nodes/node_emb", "same"),
      "ln_f.weight": ("params/llm/ln_f/scale", "same"),
      "ln_f.bias": ("params/llm/ln_f/bias", "same"),
    }
    m.update(weights.dense_map("token_embedding", "params/token_embedding"))
    m.update(weights.dense_map("head", "params/head"))
    if self.norm is not None and self.norm.affine:
      m["norm.weight"] = ("params/norm/weight", "same")
      m["norm.bias"] = ("params/norm/bias", "same")
    if self.se_attention and self.node_phases is not None:
      m.update(weights.dense_map("node_phases", "params/rotary/node_phases/scale"))
    if not self.se_attention:
      m["wpe"] = ("params/llm/wpe/embedding", "same")
    m.update(
      {
        k: v
        for k, v in weights.gpt2_block_map("", "params/llm", len(self.h)).items()
        if not k.startswith("ln_f")
      }
    )
    for i in self.mrffn_layers:
      m.update(mrffn_map(f"h.{i}.extra_ffn", f"params/llm/h_{i}/extra_ffn", f"memory/llm/h_{i}/extra_ffn"))
    return m

  def unused_stjax(self) -> tuple[str, ...]:
    """stjax leaves with no torch twin: wte (inputs are embeddings), wpe under SE-Attention, and
    the memory usage statistics (logging only)."""
    unused = ["params/llm/wte/"]
    if self.se_attention:
      unused.append("params/llm/wpe/")
    for i in self.mrffn_layers:
      unused += [f"memory/llm/h_{i}/extra_ffn/memory/usage", f"memory/llm/h_{i}/extra_ffn/memory/idle_steps"]
    return tuple(unused)


def from_config(mc, spec, kernels=None) -> STLink:
  """The torch ST-LINK for a stjax `config.model` (split SE-Attention or none), DataSpec and
  resolved kernels (None = stjax's defaults: dense experts)."""
  from stjax.kernels import Kernels
  from stjax.models.backbones.config import llm_config
  from stjax.models.st_link import resolve_mrffn_layers

  if mc.se_attention and mc.se_mode != "split":
    raise ValueError(f"torch reference: se_mode={mc.se_mode!r} is not built (split only)")
  if mc.node_emb_init != "xavier":
    raise ValueError("torch reference: node_emb_init must be xavier (weights are copied from stjax anyway)")
  gpt2 = llm_config(mc, causal=mc.causal, use_wpe=False)
  dense = (kernels or Kernels()).experts == "dense"
  mrffn_kwargs = dict(
    memory_size=mc.memory_size,
    key_dim=mc.memory_key_dim,
    top_k=mc.memory_top_k,
    tau=mc.memory_tau,
    alpha=mc.memory_alpha,
    num_experts=mc.num_experts,
    expert_top_k=mc.expert_top_k,
    expert_hidden=mc.expert_hidden,
    aux_weight=mc.moe_aux_weight,
    # torch's per-expert loop against stjax's grouped kernels; dense where stjax's are.
    dispatch="dense" if dense else "loop",
  )
  if mc.mrffn and mc.memory_reseed_after:
    raise ValueError("torch reference: memory_reseed_after > 0 is not built")
  return STLink(
    num_nodes=spec.num_nodes,
    input_offsets=tuple(int(o) for o in spec.input_offsets),
    in_channels=spec.in_channels,
    output_len=spec.output_len,
    out_channels=spec.out_channels,
    steps_per_day=spec.steps_per_day,
    gpt2=gpt2,
    patch_len=mc.patch_len,
    embed_dim=mc.embed_dim,
    se_attention=mc.se_attention,
    temporal_dims=mc.temporal_dims,
    rope_base=mc.rope_base,
    mrffn_layers=resolve_mrffn_layers(mc) if mc.mrffn else (),
    mrffn_kwargs=mrffn_kwargs,
    revin=mc.revin,
    revin_affine=mc.revin_affine,
  )
