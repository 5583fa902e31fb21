"""Llama-family decoder in Flax Linen, numerically equal to Hugging Face's `LlamaModel`.

Covers Llama 2 / 3 / 3.1 / 3.2 geometry: RMSNorm (pre-norm), rotary position embeddings
("rotate half" layout, optional Llama-3 frequency scaling), SwiGLU MLP, grouped-query attention,
no biases. Default config: Llama 3.2 1B. Like `LlamaModel` it has no language-model head: tied
checkpoints (3.2 1B/3B) need none (the head is `embed_tokens`), and an untied checkpoint's separate
`lm_head` is not part of the backbone (`tie_word_embeddings` is kept only to round-trip the config).

Parameter tree (HF names; kernels are [in, out], i.e. HF's `nn.Linear.weight` transposed):

    embed_tokens/embedding [vocab, embed]
    layers_i/input_layernorm/scale [embed]
    layers_i/self_attn/q_proj/kernel [embed, heads*head_dim]
    layers_i/self_attn/{k_proj,v_proj}/kernel [embed, kv_heads*head_dim]
    layers_i/self_attn/o_proj/kernel [heads*head_dim, embed]
    layers_i/post_attention_layernorm/scale [embed]
    layers_i/mlp/{gate_proj,up_proj}/kernel [embed, mlp]   layers_i/mlp/down_proj/kernel [mlp, embed]
    norm/scale [embed]
    (+ lora_a [in, r], lora_b [r, out] beside kernels matching config.lora_targets when lora_rank > 0)

Logical axes: embed, heads, kv_heads, mlp, vocab (see stjax/sharding.py for the mesh rules).

Pluggable parts, as in `stjax.models.backbones.gpt2` (same factories, same block contract):
- `LlamaAttention` runs `qkv` -> `transform_qk` -> `attend` -> `out`; `transform_qk` applies the
  rotary embedding at `positions` (from `attention_kwargs`, default 0..seq-1). A subclass may
  override it (e.g. ST-LINK's spatio-temporal rotations) and keeps the q/k/v/o parameter names.
- `LlamaBlock(extra_ffn_factory=...)` adds a module's output to the pretrained MLP's output and
  returns `(out, aux_loss)`; the module lives at `layers_i/extra_ffn`.
The block's and the trunk's call are shared with GPT-2 (`stjax.models.backbones.decoder`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.layers import attention
from stjax.layers.rope import apply_rotary
from stjax.models.backbones.decoder import (
  COMPUTE_DTYPES,
  ConfigMixin,
  DecoderTrunk,
  LoRAProjections,
  PreNormBlock,
  remat_policy,
)

# Every projection of a Llama block (regex over module paths).
LLAMA_LORA_TARGETS = r"self_attn/(q_proj|k_proj|v_proj|o_proj)|mlp/(gate_proj|up_proj|down_proj)"
_ROPE_TYPES = ("default", "llama3")


@dataclasses.dataclass(frozen=True)
class LlamaConfig(ConfigMixin):
  """Llama hyper-parameters (HF names) plus stjax switches. Defaults: Llama 3.2 1B."""

  vocab_size: int = 128256
  hidden_size: int = 2048  # model width d
  intermediate_size: int = 8192  # SwiGLU hidden width
  num_hidden_layers: int = 16  # blocks layers_0 .. layers_{L-1} (truncate by lowering)
  num_attention_heads: int = 32
  num_key_value_heads: int = 8  # grouped-query attention: heads share K/V in groups
  head_dim: int = 64
  max_position_embeddings: int = 131072  # informational (RoPE has no table)
  rms_norm_eps: float = 1e-5
  rope_theta: float = 500000.0
  rope_type: str = "llama3"  # "default" (plain RoPE) or "llama3" (scaled frequencies)
  rope_factor: float = 32.0  # llama3: long wavelengths are divided by this
  rope_low_freq_factor: float = 1.0  # llama3: wavelengths > orig/low are fully scaled
  rope_high_freq_factor: float = 4.0  # llama3: wavelengths < orig/high are kept
  rope_original_max_positions: int = 8192  # llama3: pretraining context of the unscaled model
  tie_word_embeddings: bool = True  # HF flag, round-tripped (the trunk has no LM head)
  attention_dropout: float = 0.0  # dropout on attention probabilities (training only)
  causal: bool = True  # causal attention (HF); False = full attention
  dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"; params float32
  lora_rank: int = 0  # LoRA rank on projections matching lora_targets; 0 = off
  lora_alpha: float | None = None  # LoRA alpha (scale alpha/rank); None = rank (scale 1)
  lora_targets: str = LLAMA_LORA_TARGETS  # regex over module paths, e.g. "self_attn/q_proj"
  kernels: Kernels = Kernels()  # resolved kernel choices (stjax.kernels): attention
  remat: str = "none"  # per-block rematerialisation: none | block | full | a jax.checkpoint_policies name

  def __post_init__(self):
    self._coerce_kernels()
    remat_policy(self.remat)
    for name in (
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
      "num_key_value_heads",
      "head_dim",
    ):
      if getattr(self, name) < 1:
        raise UserError(f"LlamaConfig.{name}: must be >= 1, got {getattr(self, name)}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise UserError(
        f"LlamaConfig: num_attention_heads={self.num_attention_heads} is not a multiple "
        f"of num_key_value_heads={self.num_key_value_heads}"
      )
    if self.head_dim % 2:
      raise UserError(f"LlamaConfig.head_dim: rotary embeddings need an even head_dim, got {self.head_dim}")
    if self.rope_type not in _ROPE_TYPES:
      raise UserError(f"LlamaConfig.rope_type: {self.rope_type!r} is not one of {list(_ROPE_TYPES)}")
    if self.rope_type == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
      raise UserError("LlamaConfig: llama3 rope needs rope_high_freq_factor > rope_low_freq_factor")
    if self.dtype not in COMPUTE_DTYPES:
      raise UserError(f"LlamaConfig.dtype: {self.dtype!r} is not one of {sorted(COMPUTE_DTYPES)}")
    if self.lora_rank < 0:
      raise UserError(f"LlamaConfig.lora_rank: must be >= 0, got {self.lora_rank}")

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "LlamaConfig":
    """Builds a config from a Hugging Face Llama `config.json` dict; rejects what we can't run.

    Reads RoPE settings in both spellings: `rope_theta` + `rope_scaling` (transformers 4) and
    `rope_parameters` (transformers 5).
    """
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    if model_type != "llama" or any(not str(a).startswith("Llama") for a in archs):
      raise UserError(
        f"{source}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
        "only Llama (model_type 'llama') is supported here"
      )
    if hf.get("hidden_act", "silu") != "silu":
      raise UserError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (Llama uses 'silu')")
    for flag in ("attention_bias", "mlp_bias"):
      if hf.get(flag):
        raise UserError(f"{source}: {flag}=true is not supported (Llama projections have no bias)")
    for name in (
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
    ):
      if hf.get(name) is None:
        raise UserError(f"{source}: missing field {name!r}")
    fields: dict[str, Any] = {
      name: hf[name]
      for name in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
      )
      if hf.get(name) is not None
    }
    fields["num_key_value_heads"] = hf.get("num_key_value_heads") or hf["num_attention_heads"]
    fields["head_dim"] = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    fields["tie_word_embeddings"] = bool(hf.get("tie_word_embeddings", False))
    fields["attention_dropout"] = float(hf.get("attention_dropout") or 0.0)
    fields.update(_rope_fields(hf, source))
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dict of this architecture (stjax switches left out).

    Uses the transformers-4 spelling (`rope_theta`, `rope_scaling`), which transformers 5 also reads.
    """
    scaling = None
    if self.rope_type == "llama3":
      scaling = {
        "rope_type": "llama3",
        "factor": self.rope_factor,
        "low_freq_factor": self.rope_low_freq_factor,
        "high_freq_factor": self.rope_high_freq_factor,
        "original_max_position_embeddings": self.rope_original_max_positions,
      }
    return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": self.vocab_size,
      "hidden_size": self.hidden_size,
      "intermediate_size": self.intermediate_size,
      "num_hidden_layers": self.num_hidden_layers,
      "num_attention_heads": self.num_attention_heads,
      "num_key_value_heads": self.num_key_value_heads,
      "head_dim": self.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": self.max_position_embeddings,
      "rms_norm_eps": self.rms_norm_eps,
      "rope_theta": self.rope_theta,
      "rope_scaling": scaling,
      "tie_word_embeddings": self.tie_word_embeddings,
      "attention_bias": False,
      "attention_dropout": self.attention_dropout,
      "mlp_bias": False,
      "initializer_range": 0.02,
      "pretraining_tp": 1,
    }


def _rope_fields(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
  """LlamaConfig rope_* fields from either config.json spelling."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  merged = {**params, **scaling}
  theta = merged.get("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = merged.get("rope_type", merged.get("type", "default"))
  if rope_type not in _ROPE_TYPES:
    raise UserError(f"{source}: rope type {rope_type!r} is not supported (supported: {list(_ROPE_TYPES)})")
  fields: dict[str, Any] = {"rope_theta": float(theta), "rope_type": rope_type}
  if rope_type == "llama3":
    keys = {
      "factor": "rope_factor",
      "low_freq_factor": "rope_low_freq_factor",
      "high_freq_factor": "rope_high_freq_factor",
      "original_max_position_embeddings": "rope_original_max_positions",
    }
    for hf_key, field in keys.items():
      if merged.get(hf_key) is None:
        raise UserError(f"{source}: llama3 rope scaling is missing {hf_key!r}")
      fields[field] = merged[hf_key]
  return fields


def rope_inverse_frequencies(config: LlamaConfig) -> np.ndarray:
  """Rotary frequencies omega_j [head_dim // 2] float32, with Llama-3 scaling when configured.

  Plain: omega_j = theta^(-2j/d). llama3: wavelengths 2 pi / omega longer than
  orig / low_freq_factor are divided by `factor`, those shorter than orig / high_freq_factor are
  kept, and those between are interpolated smoothly (as Meta's and HF's reference code).
  """
  d = config.head_dim
  inv = (1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))).astype(np.float32)
  if config.rope_type == "default":
    return inv
  inv = inv.astype(np.float64)
  orig, factor = config.rope_original_max_positions, config.rope_factor
  low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
  wavelen = 2 * math.pi / inv
  scaled = np.where(wavelen > orig / low, inv / factor, inv)
  smooth = (orig / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= orig / high) & (wavelen <= orig / low)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rms_norm(config: LlamaConfig, name: str | None = None) -> nn.RMSNorm:
  """RMSNorm x / sqrt(mean(x^2) + eps) * scale, statistics in float32, scale [embed]."""
  return nn.RMSNorm(
    epsilon=config.rms_norm_eps,
    dtype=config.compute_dtype,
    param_dtype=jnp.float32,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    name=name,
  )


class _LlamaProjections(LoRAProjections):
  """Mixin: a bias-free, LoRA-aware Dense named for its place in the tree."""

  use_projection_bias = False


class LlamaAttention(_LlamaProjections):
  """Grouped-query self-attention with rotary q/k. h: [batch, seq, embed] -> [batch, seq, embed].

  Subclasses override the steps, not `__call__`.
  """

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.q_proj = self.dense(cfg.num_attention_heads * cfg.head_dim, ("embed", "heads"), "q_proj")
    self.k_proj = self.dense(cfg.num_key_value_heads * cfg.head_dim, ("embed", "kv_heads"), "k_proj")
    self.v_proj = self.dense(cfg.num_key_value_heads * cfg.head_dim, ("embed", "kv_heads"), "v_proj")
    self.o_proj = self.dense(cfg.hidden_size, ("heads", "embed"), "o_proj")

  def __call__(self, h: jax.Array, *, deterministic: bool, **kwargs) -> jax.Array:
    q, k, v = self.qkv(h)
    q, k = self.transform_qk(q, k, **kwargs)
    o = self.attend(q, k, v, deterministic=deterministic)
    return self.out(o)

  def qkv(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """h: [batch, seq, embed] -> q [batch, seq, heads, head_dim], k, v [batch, seq, kv_heads, head_dim]."""
    cfg = self.config
    b, s, _ = h.shape
    q = self.q_proj(h).reshape(b, s, cfg.num_attention_heads, cfg.head_dim)
    k = self.k_proj(h).reshape(b, s, cfg.num_key_value_heads, cfg.head_dim)
    v = self.v_proj(h).reshape(b, s, cfg.num_key_value_heads, cfg.head_dim)
    return q, k, v

  def transform_qk(
    self, q: jax.Array, k: jax.Array, *, positions: jax.Array | None = None, **kwargs
  ) -> tuple[jax.Array, jax.Array]:
    """Rotary embedding of q and k.

    Args:
      q: [batch, seq, heads, head_dim]; k: [batch, seq, kv_heads, head_dim].
      positions: [seq] or [batch, seq] token positions (any real value); default 0..seq-1.
      kwargs: other attention kwargs (meant for a subclass) are ignored, so a model can switch
        its attention class without changing what it passes.
    """
    del kwargs
    if positions is None:
      positions = jnp.arange(q.shape[1])
    omega = jnp.asarray(rope_inverse_frequencies(self.config))
    angles = jnp.asarray(positions, jnp.float32)[..., None] * omega  # [(batch,) seq, head_dim/2]
    angles = angles[..., None, :]  # broadcast over heads
    return apply_rotary(q, angles), apply_rotary(k, angles)

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *, deterministic: bool) -> jax.Array:
    """q: [batch, seq, heads, head_dim], k, v: [batch, seq, kv_heads, head_dim] -> like q."""
    cfg = self.config
    rate = cfg.attention_dropout
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

  def out(self, o: jax.Array) -> jax.Array:
    """o: [batch, seq, heads, head_dim] -> [batch, seq, embed] (o_proj)."""
    b, s = o.shape[:2]
    return self.o_proj(o.reshape(b, s, -1))


class LlamaMLP(_LlamaProjections):
  """SwiGLU: h [batch, seq, embed] -> down(silu(gate(h)) * up(h)) [batch, seq, embed]."""

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.gate_proj = self.dense(cfg.intermediate_size, ("embed", "mlp"), "gate_proj")
    self.up_proj = self.dense(cfg.intermediate_size, ("embed", "mlp"), "up_proj")
    self.down_proj = self.dense(cfg.hidden_size, ("mlp", "embed"), "down_proj")

  def __call__(self, h: jax.Array, *, deterministic: bool = True) -> jax.Array:
    del deterministic  # Llama has no MLP dropout; kept for the block contract
    return self.down_proj(jax.nn.silu(self.gate_proj(h)) * self.up_proj(h))


class LlamaBlock(PreNormBlock):
  """Pre-norm block: x + attn(rms x), then + mlp(rms x) [+ extra_ffn(rms x)].

  Fields and call: `PreNormBlock`. The attention (default `LlamaAttention(config)`) is named
  `self_attn`.
  """

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.input_layernorm = rms_norm(cfg)
    self.self_attn = self.build_attention(LlamaAttention)
    self.post_attention_layernorm = rms_norm(cfg)
    self.mlp = LlamaMLP(cfg)
    self.extra_ffn = self.build_extra_ffn()

  def parts(self) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    return self.input_layernorm, self.self_attn, self.post_attention_layernorm, self.mlp


class Llama(DecoderTrunk):
  """Llama trunk: (inputs_embeds | input_ids) -> layers_i -> final RMSNorm `norm`.

  Fields and call: `DecoderTrunk`; `config.num_hidden_layers` blocks are built (truncate by
  lowering it), the default attention is `LlamaAttention` (rotary q/k at
  `attention_kwargs["positions"]`, default 0..seq-1).
  """

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.embed_tokens = nn.Embed(
      cfg.vocab_size,
      cfg.hidden_size,
      dtype=cfg.compute_dtype,
      param_dtype=jnp.float32,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
    )
    self.layers = self.make_blocks(LlamaBlock, cfg.num_hidden_layers)
    self.norm = rms_norm(cfg)

  def parts(self) -> tuple[nn.Embed, list[nn.Module], nn.Module]:
    return self.embed_tokens, self.layers, self.norm


def num_params(config: LlamaConfig) -> int:
  """Exact parameter count of `Llama(config)`, from shapes only (jax.eval_shape, no allocation)."""
  model = Llama(config)
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, config.hidden_size), jnp.float32))
  )
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes["params"])))
