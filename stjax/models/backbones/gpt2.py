"""GPT-2 in Flax Linen, numerically equal to Hugging Face's `GPT2Model`.

Parameter tree (HF names; kernels in HF Conv1D [in, out] layout):

    wte/embedding [vocab, embed]        wpe/embedding [positions, embed]
    h_i/ln_1/{scale,bias} [embed]       h_i/attn/c_attn/{kernel [embed, 3*embed], bias}
    h_i/attn/c_proj/{kernel [embed, embed], bias}   h_i/ln_2/{scale,bias}
    h_i/mlp/c_fc/{kernel [embed, inner], bias}      h_i/mlp/c_proj/{kernel [inner, embed], bias}
    ln_f/{scale,bias}
    (+ lora_a [in, r], lora_b [r, out] beside chosen kernels when config.lora_rank > 0)

`wte` and `wpe` always exist (so a pretrained checkpoint always fits the tree), even when the model
is fed `inputs_embeds` or runs with `use_wpe=False`.

Pluggable parts (one block implementation, no copies):
- `GPT2Attention` is split into `qkv` -> `transform_qk` -> `attend` -> `out`; a subclass (ST-LINK's
  SE-Attention) overrides `transform_qk` (e.g. rotary q/k from kwargs passed through
  `GPT2.__call__(attention_kwargs=...)`) and keeps the parameter names `c_attn`, `c_proj`.
- `GPT2Block(extra_ffn_factory=...)` adds a module's output to the frozen pretrained MLP's output
  (ST-LINK's MRFFN); it returns `(out, aux_loss)` and lives at `h_i/extra_ffn`.
The block's and the trunk's call are shared with Llama (`stjax.models.backbones.decoder`); this module names
the parts (and so the parameters) and adds GPT-2's learned positions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.kernels.broadcast import over_leading
from stjax.layers import attention
from stjax.layers.dropout import Dropout
from stjax.layers.lora import DEFAULT_LORA_TARGETS
from stjax.models.backbones.decoder import (
  COMPUTE_DTYPES,
  ConfigMixin,
  DecoderTrunk,
  LoRAProjections,
  PreNormBlock,
  remat_policy,
)

# HF activation names that mean tanh-approximated GELU.
_TANH_GELU_NAMES = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclasses.dataclass(frozen=True)
class GPT2Config(ConfigMixin):
  """GPT-2 hyper-parameters (HF names) plus stjax switches. Defaults: the 124M `gpt2`."""

  vocab_size: int = 50257
  n_positions: int = 1024  # size of the learned position table wpe
  n_embd: int = 768  # model width d
  n_layer: int = 12  # number of blocks h_0 .. h_{n_layer-1}
  n_head: int = 12
  n_inner: int | None = None  # MLP width; None = 4 * n_embd
  layer_norm_epsilon: float = 1e-5
  embd_pdrop: float = 0.1  # dropout after wte/wpe
  attn_pdrop: float = 0.1  # dropout on attention probabilities
  resid_pdrop: float = 0.1  # dropout on attention and MLP outputs
  use_wpe: bool = True  # add wpe[0..S-1] to the inputs (HF behaviour)
  causal: bool = True  # causal attention (HF); False = full attention
  dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"; params stay float32
  lora_rank: int = 0  # LoRA rank on projections matching lora_targets; 0 = off
  lora_alpha: float | None = None  # LoRA alpha (scale alpha/rank); None = rank (scale 1)
  lora_targets: str = DEFAULT_LORA_TARGETS  # regex over module paths, e.g. "attn/c_attn"
  kernels: Kernels = Kernels()  # resolved kernel choices (stjax.kernels): attention, leading sums
  remat: str = "none"  # per-block rematerialisation: none | block | full | a jax.checkpoint_policies name

  def __post_init__(self):
    self._coerce_kernels()
    remat_policy(self.remat)
    if self.n_embd % self.n_head:
      raise UserError(f"GPT2Config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
    if self.dtype not in COMPUTE_DTYPES:
      raise UserError(f"GPT2Config.dtype: {self.dtype!r} is not one of {sorted(COMPUTE_DTYPES)}")
    if self.n_layer < 1:
      raise UserError(f"GPT2Config.n_layer: must be >= 1, got {self.n_layer}")
    if self.lora_rank < 0:
      raise UserError(f"GPT2Config.lora_rank: must be >= 0, got {self.lora_rank}")

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head

  @property
  def inner_dim(self) -> int:
    return self.n_inner or 4 * self.n_embd

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "GPT2Config":
    """Builds a config from a Hugging Face GPT-2 `config.json` dict; rejects what we can't run."""
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    if model_type != "gpt2" or any(not str(a).startswith("GPT2") for a in archs):
      raise UserError(
        f"{source}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
        "only GPT-2 (model_type 'gpt2') is supported"
      )
    act = hf.get("activation_function", "gelu_new")
    if act not in _TANH_GELU_NAMES:
      raise UserError(f"{source}: activation_function {act!r} is not supported (GPT-2 uses 'gelu_new')")
    for flag, want in (
      ("scale_attn_weights", True),
      ("scale_attn_by_inverse_layer_idx", False),
      ("reorder_and_upcast_attn", False),
      ("add_cross_attention", False),
    ):
      if bool(hf.get(flag, want)) != want:
        raise UserError(f"{source}: {flag}={hf[flag]!r} is not supported (expected {want})")
    fields = {}
    for name in (
      "vocab_size",
      "n_positions",
      "n_embd",
      "n_layer",
      "n_head",
      "n_inner",
      "layer_norm_epsilon",
      "embd_pdrop",
      "attn_pdrop",
      "resid_pdrop",
    ):
      if name in hf and hf[name] is not None:
        fields[name] = hf[name]
    for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
      if name not in fields:
        raise UserError(f"{source}: missing field {name!r}")
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dict of this architecture (stjax switches left out)."""
    return {
      "architectures": ["GPT2Model"],
      "model_type": "gpt2",
      "vocab_size": self.vocab_size,
      "n_positions": self.n_positions,
      "n_ctx": self.n_positions,
      "n_embd": self.n_embd,
      "n_layer": self.n_layer,
      "n_head": self.n_head,
      "n_inner": self.n_inner,
      "activation_function": "gelu_new",
      "layer_norm_epsilon": self.layer_norm_epsilon,
      "embd_pdrop": self.embd_pdrop,
      "attn_pdrop": self.attn_pdrop,
      "resid_pdrop": self.resid_pdrop,
      "scale_attn_weights": True,
      "scale_attn_by_inverse_layer_idx": False,
      "reorder_and_upcast_attn": False,
      "initializer_range": 0.02,
      "bos_token_id": 50256,
      "eos_token_id": 50256,
    }


def gelu_new(x: jax.Array) -> jax.Array:
  """tanh-approximated GELU, HF's `gelu_new`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
  return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(config: GPT2Config, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm with eps from the config, statistics in float32, params [embed]."""
  return nn.LayerNorm(
    epsilon=config.layer_norm_epsilon,
    dtype=config.compute_dtype,
    param_dtype=jnp.float32,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    name=name,
  )


class GPT2Attention(LoRAProjections):
  """Multi-head self-attention with fused q|k|v (`c_attn`) and output projection (`c_proj`).

  h: [batch, seq, embed] -> [batch, seq, embed]. Subclasses override the steps, not `__call__`.
  """

  config: GPT2Config

  def setup(self):
    cfg = self.config
    self.c_attn = self.dense(3 * cfg.n_embd, ("embed", "qkv"), "c_attn")
    self.c_proj = self.dense(cfg.n_embd, ("heads", "embed"), "c_proj")
    self.resid_dropout = Dropout(cfg.resid_pdrop)

  def __call__(self, h: jax.Array, *, deterministic: bool, **kwargs) -> jax.Array:
    q, k, v = self.qkv(h)
    q, k = self.transform_qk(q, k, **kwargs)
    o = self.attend(q, k, v, deterministic=deterministic)
    return self.out(o, deterministic=deterministic)

  def qkv(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """h: [batch, seq, embed] -> q, k, v each [batch, seq, heads, head_dim]."""
    cfg = self.config
    b, s, _ = h.shape
    fused = self.c_attn(h)
    q, k, v = jnp.split(fused, 3, axis=-1)
    shape = (b, s, cfg.n_head, cfg.head_dim)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)

  def transform_qk(self, q: jax.Array, k: jax.Array, **kwargs) -> tuple[jax.Array, jax.Array]:
    """Hook for position encodings on q/k (rotary in SE-Attention). Identity here.

    Plain GPT-2 attention ignores `kwargs` (positions meant for a rotary subclass), so a model can
    switch its attention class (e.g. the no-SE ablation) without changing what it passes.
    """
    del kwargs
    return q, k

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *, deterministic: bool) -> jax.Array:
    """[batch, seq, heads, head_dim] x3 -> [batch, seq, heads, head_dim]."""
    cfg = self.config
    rate = cfg.attn_pdrop
    rng = self.make_rng("dropout") if (rate > 0.0 and not deterministic) else None
    return attention.attend(
      q,
      k,
      v,
      causal=cfg.causal,
      dropout_rate=rate,
      deterministic=deterministic,
      dropout_rng=rng,
      kernel=cfg.kernels.attention,
      pallas_interpret=cfg.kernels.pallas == "interpret",
    )

  def out(self, o: jax.Array, *, deterministic: bool) -> jax.Array:
    """o: [batch, seq, heads, head_dim] -> [batch, seq, embed] (c_proj, residual dropout)."""
    b, s = o.shape[:2]
    y = self.c_proj(o.reshape(b, s, -1))
    return self.resid_dropout(y, deterministic=deterministic)


class GPT2MLP(LoRAProjections):
  """h: [batch, seq, embed] -> c_fc -> gelu_new -> c_proj -> dropout -> [batch, seq, embed]."""

  config: GPT2Config

  def setup(self):
    cfg = self.config
    self.c_fc = self.dense(cfg.inner_dim, ("embed", "mlp"), "c_fc")
    self.c_proj = self.dense(cfg.n_embd, ("mlp", "embed"), "c_proj")
    self.dropout = Dropout(cfg.resid_pdrop)

  def __call__(self, h: jax.Array, *, deterministic: bool) -> jax.Array:
    return self.dropout(self.c_proj(gelu_new(self.c_fc(h))), deterministic=deterministic)


class GPT2Block(PreNormBlock):
  """Pre-LN transformer block: x + attn(ln_1 x), then + mlp(ln_2 x) [+ extra_ffn(ln_2 x)].

  Fields and call: `PreNormBlock`. The attention (default `GPT2Attention(config)`) is named `attn`.
  """

  config: GPT2Config

  def setup(self):
    cfg = self.config
    self.ln_1 = layer_norm(cfg)
    self.attn = self.build_attention(GPT2Attention)
    self.ln_2 = layer_norm(cfg)
    self.mlp = GPT2MLP(cfg)
    self.extra_ffn = self.build_extra_ffn()

  def parts(self) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    return self.ln_1, self.attn, self.ln_2, self.mlp


class GPT2(DecoderTrunk):
  """GPT-2 trunk: (inputs_embeds | input_ids) [+ wpe] -> dropout -> h_i -> ln_f.

  Fields and call: `DecoderTrunk`; `config.n_layer` blocks are built (truncate by lowering it),
  the default attention is `GPT2Attention`.
  """

  config: GPT2Config

  def setup(self):
    cfg = self.config
    self.wte = nn.Embed(
      cfg.vocab_size,
      cfg.n_embd,
      dtype=cfg.compute_dtype,
      param_dtype=jnp.float32,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
    )
    self.wpe = nn.Embed(
      cfg.n_positions,
      cfg.n_embd,
      dtype=cfg.compute_dtype,
      param_dtype=jnp.float32,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.01), ("positions", "embed")),
    )
    self.drop = Dropout(cfg.embd_pdrop)
    self.h = self.make_blocks(GPT2Block, cfg.n_layer)
    self.ln_f = layer_norm(cfg)

  def parts(self) -> tuple[nn.Embed, list[nn.Module], nn.Module]:
    return self.wte, self.h, self.ln_f

  def add_positions(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """x: [batch, seq, embed] -> x + wpe[0..seq-1] (when use_wpe), then embedding dropout."""
    cfg = self.config
    seq = x.shape[1]
    wpe_table = self.wpe.embedding  # always created (like wte) so checkpoints fit the tree
    if cfg.use_wpe:
      if seq > cfg.n_positions:
        raise UserError(
          f"GPT2: sequence length {seq} exceeds n_positions={cfg.n_positions} "
          "(the learned position table); shorten the input or set use_wpe=False"
        )
      x = x + over_leading(wpe_table[:seq].astype(cfg.compute_dtype), x.shape[:1], cfg.kernels.leading_sum)
    return self.drop(x, deterministic=deterministic)
