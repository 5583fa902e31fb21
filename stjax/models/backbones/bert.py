"""BERT encoder in Flax Linen, numerically equal to Hugging Face's `BertModel` (last hidden state).

Post-LayerNorm blocks (a = LN(x + attn(x)), out = LN(a + ffn(a))), exact (erf) GELU as HF's
`hidden_act="gelu"`, learned absolute positions, token-type embeddings and an embedding
LayerNorm. Attention is bidirectional (`causal=False`) through `stjax.layers.attention.attend`,
the core GPT-2 and Llama use, with an optional [batch, seq] 0/1 mask over the keys (HF's
`attention_mask`). There is no pooler: the trunk returns the last hidden state, as
`BertModel(...).last_hidden_state`.

Parameter tree (HF `BertModel` names; `encoder.layer.i` is flattened to `layer_i`, as GPT-2's
`h_i`; kernels [in, out] = HF `Linear.weight` transposed; LayerNorm weight -> `scale`):

    embeddings/word_embeddings/embedding [vocab, embed]
    embeddings/position_embeddings/embedding [positions, embed]
    embeddings/token_type_embeddings/embedding [types, embed]
    embeddings/LayerNorm/{scale,bias} [embed]
    layer_i/attention/self/{query,key,value}/{kernel [embed, embed], bias}
    layer_i/attention/output/dense/{kernel [embed, embed], bias}   layer_i/attention/output/LayerNorm
    layer_i/intermediate/dense/{kernel [embed, mlp], bias}
    layer_i/output/dense/{kernel [mlp, embed], bias}               layer_i/output/LayerNorm
    (+ lora_a [in, r], lora_b [r, out] beside kernels matching config.lora_targets when lora_rank > 0)

Logical axes (GPT-2's names): word table (vocab, embed), position table (positions, embed),
token-type table (None, embed) (2 rows: replicated), query/key/value (embed, heads), attention
output (heads, embed), intermediate (embed, mlp), output (mlp, embed), LayerNorms (embed,).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.kernels.broadcast import over_leading
from stjax.layers import attention
from stjax.layers.dropout import Dropout
from stjax.models.backbones.decoder import (
  COMPUTE_DTYPES,
  ConfigMixin,
  LoRAProjections,
  remat_block,
  remat_policy,
)

# Every projection of a BERT layer (regex over module paths; `output/dense` is both the attention
# output and the FFN output projection).
BERT_LORA_TARGETS = r"self/(query|key|value)|output/dense|intermediate/dense"


@dataclasses.dataclass(frozen=True)
class BertConfig(ConfigMixin):
  """BERT hyper-parameters (HF names) plus stjax switches. Defaults: `bert-base-uncased`."""

  vocab_size: int = 30522
  hidden_size: int = 768  # model width d
  num_hidden_layers: int = 12  # layers layer_0 .. layer_{L-1} (truncate by lowering)
  num_attention_heads: int = 12
  intermediate_size: int = 3072  # FFN width
  max_position_embeddings: int = 512  # rows of the learned position table
  type_vocab_size: int = 2  # rows of the token-type table
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1  # dropout after the embeddings and each projection out
  attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
  causal: bool = False  # False = bidirectional (HF BertModel); True = causal
  dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"; params float32
  lora_rank: int = 0  # LoRA rank on projections matching lora_targets; 0 = off
  lora_alpha: float | None = None  # LoRA alpha (scale alpha/rank); None = rank (scale 1)
  lora_targets: str = BERT_LORA_TARGETS  # regex over module paths, e.g. "self/query"
  kernels: Kernels = Kernels()  # resolved kernel choices (stjax.kernels): attention, leading sums
  remat: str = "none"  # per-block rematerialisation: none | block | full | a jax.checkpoint_policies name

  def __post_init__(self):
    self._coerce_kernels()
    remat_policy(self.remat)
    for name in (
      "vocab_size",
      "hidden_size",
      "num_hidden_layers",
      "num_attention_heads",
      "intermediate_size",
      "max_position_embeddings",
      "type_vocab_size",
    ):
      if getattr(self, name) < 1:
        raise UserError(f"BertConfig.{name}: must be >= 1, got {getattr(self, name)}")
    if self.hidden_size % self.num_attention_heads:
      raise UserError(
        f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
        f"num_attention_heads={self.num_attention_heads}"
      )
    if self.dtype not in COMPUTE_DTYPES:
      raise UserError(f"BertConfig.dtype: {self.dtype!r} is not one of {sorted(COMPUTE_DTYPES)}")
    if self.lora_rank < 0:
      raise UserError(f"BertConfig.lora_rank: must be >= 0, got {self.lora_rank}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "BertConfig":
    """Builds a config from a Hugging Face BERT `config.json` dict; rejects what we can't run."""
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    if model_type != "bert" or any(not str(a).startswith("Bert") for a in archs):
      raise UserError(
        f"{source}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
        "only BERT (model_type 'bert') is supported here"
      )
    if hf.get("hidden_act", "gelu") != "gelu":
      raise UserError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (BERT uses 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise UserError(
        f"{source}: position_embedding_type {hf['position_embedding_type']!r} is not "
        "supported (only 'absolute')"
      )
    for flag in ("is_decoder", "add_cross_attention"):
      if hf.get(flag):
        raise UserError(f"{source}: {flag}=true is not supported (BERT encoders only)")
    required = (
      "vocab_size",
      "hidden_size",
      "num_hidden_layers",
      "num_attention_heads",
      "intermediate_size",
      "max_position_embeddings",
    )
    for name in required:
      if hf.get(name) is None:
        raise UserError(f"{source}: missing field {name!r}")
    optional = ("type_vocab_size", "layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob")
    fields = {name: hf[name] for name in required + optional if hf.get(name) is not None}
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dict of this architecture (stjax switches left out)."""
    return {
      "architectures": ["BertModel"],
      "model_type": "bert",
      "vocab_size": self.vocab_size,
      "hidden_size": self.hidden_size,
      "num_hidden_layers": self.num_hidden_layers,
      "num_attention_heads": self.num_attention_heads,
      "intermediate_size": self.intermediate_size,
      "max_position_embeddings": self.max_position_embeddings,
      "type_vocab_size": self.type_vocab_size,
      "layer_norm_eps": self.layer_norm_eps,
      "hidden_dropout_prob": self.hidden_dropout_prob,
      "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
      "hidden_act": "gelu",
      "position_embedding_type": "absolute",
      "is_decoder": False,
      "add_cross_attention": False,
      "initializer_range": 0.02,
      "pad_token_id": 0,
    }


def layer_norm(config: BertConfig) -> nn.LayerNorm:
  """LayerNorm with eps from the config, two-pass statistics in float32 (as torch), params [embed]."""
  return nn.LayerNorm(
    epsilon=config.layer_norm_eps,
    dtype=config.compute_dtype,
    param_dtype=jnp.float32,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
  )


def _embed(config: BertConfig, rows: int, axes: tuple[str | None, str]) -> nn.Embed:
  return nn.Embed(
    rows,
    config.hidden_size,
    dtype=config.compute_dtype,
    param_dtype=jnp.float32,
    embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes),
  )


class BertEmbeddings(nn.Module):
  """(word_embeddings[ids] | inputs_embeds) + token types + positions -> LayerNorm -> dropout."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    self.word_embeddings = _embed(cfg, cfg.vocab_size, ("vocab", "embed"))
    self.position_embeddings = _embed(cfg, cfg.max_position_embeddings, ("positions", "embed"))
    self.token_type_embeddings = _embed(cfg, cfg.type_vocab_size, (None, "embed"))
    self.LayerNorm = layer_norm(cfg)
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(
    self,
    inputs_embeds: jax.Array | None,
    input_ids: jax.Array | None,
    token_type_ids: jax.Array | None,
    *,
    deterministic: bool,
  ) -> jax.Array:
    """-> [batch, seq, embed]. Token type 0 everywhere when token_type_ids is None (as HF)."""
    cfg = self.config
    dtype = cfg.compute_dtype
    word_table = self.word_embeddings.embedding  # always created so checkpoints fit the tree
    del word_table
    x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds.astype(dtype)
    b, seq = x.shape[:2]
    if seq > cfg.max_position_embeddings:
      raise UserError(
        f"Bert: sequence length {seq} exceeds max_position_embeddings="
        f"{cfg.max_position_embeddings} (the learned position table); shorten the input"
      )
    if token_type_ids is None:
      x = x + over_leading(
        self.token_type_embeddings.embedding[0].astype(dtype), (b, seq), self.config.kernels.leading_sum
      )
    else:
      x = x + self.token_type_embeddings(token_type_ids)
    x = x + over_leading(
      self.position_embeddings.embedding[:seq].astype(dtype), (b,), self.config.kernels.leading_sum
    )
    return self.dropout(self.LayerNorm(x), deterministic=deterministic)


class BertSelfAttention(LoRAProjections):
  """h [batch, seq, embed] -> query/key/value -> attend -> context [batch, seq, embed]."""

  config: BertConfig

  def setup(self):
    cfg = self.config
    self.query = self.dense(cfg.hidden_size, ("embed", "heads"), "query")
    self.key = self.dense(cfg.hidden_size, ("embed", "heads"), "key")
    self.value = self.dense(cfg.hidden_size, ("embed", "heads"), "value")

  def __call__(self, h: jax.Array, mask: jax.Array | None, *, deterministic: bool) -> jax.Array:
    """mask: boolean [batch, 1, 1, seq] (True = key may be attended) or None."""
    cfg = self.config
    b, s, _ = h.shape
    shape = (b, s, cfg.num_attention_heads, cfg.head_dim)
    q, k, v = (proj(h).reshape(shape) for proj in (self.query, self.key, self.value))
    rate = cfg.attention_probs_dropout_prob
    rng = self.make_rng("dropout") if (rate > 0.0 and not deterministic) else None
    o = attention.attend(
      q,
      k,
      v,
      causal=cfg.causal,
      dropout_rate=rate,
      deterministic=deterministic,
      dropout_rng=rng,
      mask=mask,
      kernel=cfg.kernels.attention,
      pallas_interpret=cfg.kernels.pallas == "interpret",
    )
    return o.reshape(b, s, -1)


class BertOutput(LoRAProjections):
  """Post-LN residual: (h [batch, seq, in], residual [batch, seq, embed]) ->
  LayerNorm(residual + dropout(dense(h))) [batch, seq, embed]. HF's BertSelfOutput (in_axis
  "heads") and BertOutput (in_axis "mlp")."""

  config: BertConfig
  in_axis: str

  def setup(self):
    # `dense` is HF's name for the layer; the instance attribute shadows the builder method.
    self.dense = LoRAProjections.dense(self, self.config.hidden_size, (self.in_axis, "embed"), "dense")
    self.LayerNorm = layer_norm(self.config)
    self.dropout = Dropout(self.config.hidden_dropout_prob)

  def __call__(self, h: jax.Array, residual: jax.Array, *, deterministic: bool) -> jax.Array:
    return self.LayerNorm(residual + self.dropout(self.dense(h), deterministic=deterministic))


class BertIntermediate(LoRAProjections):
  """h [batch, seq, embed] -> gelu(dense(h)) [batch, seq, mlp], exact (erf) GELU."""

  config: BertConfig

  def setup(self):
    # `dense` is HF's name for the layer; the instance attribute shadows the builder method.
    self.dense = LoRAProjections.dense(self, self.config.intermediate_size, ("embed", "mlp"), "dense")

  def __call__(self, h: jax.Array) -> jax.Array:
    return jax.nn.gelu(self.dense(h), approximate=False)


class BertAttention(nn.Module):
  """x [batch, seq, embed] -> LayerNorm(x + dense(self-attention(x))) (HF `attention.self/output`)."""

  config: BertConfig

  def setup(self):
    self.self = BertSelfAttention(self.config)
    self.output = BertOutput(self.config, in_axis="heads")

  def __call__(self, x: jax.Array, mask: jax.Array | None, *, deterministic: bool) -> jax.Array:
    return self.output(self.self(x, mask, deterministic=deterministic), x, deterministic=deterministic)


class BertLayer(nn.Module):
  """Post-LN block: a = attention(x); out = LayerNorm(a + dense(gelu(intermediate(a))))."""

  config: BertConfig

  def setup(self):
    self.attention = BertAttention(self.config)
    self.intermediate = BertIntermediate(self.config)
    self.output = BertOutput(self.config, in_axis="mlp")

  def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool = True) -> jax.Array:
    """Positional arguments, so `remat_block` can mark `deterministic` static."""
    a = self.attention(x, mask, deterministic=deterministic)
    return self.output(self.intermediate(a), a, deterministic=deterministic)


class Bert(nn.Module):
  """BERT trunk: embeddings -> layer_i; `config.num_hidden_layers` layers (truncate by lowering it).

  `attention_factory` / `extra_ffn_factory` exist for the backbone interface
  (`stjax.models.backbones.build_backbone`); BERT takes no pluggable parts (ST-LINK's SE-Attention
  and MRFFN run on GPT-2 or Llama), so they must return None."""

  config: BertConfig
  attention_factory: Any = None
  extra_ffn_factory: Any = None

  def setup(self):
    for name in ("attention_factory", "extra_ffn_factory"):
      factory = getattr(self, name)
      if factory is not None and any(factory(i) is not None for i in range(self.config.num_hidden_layers)):
        raise UserError(
          f"backbone bert: no pluggable parts ({name}); SE-Attention and MRFFN need gpt2 or llama"
        )
    self.embeddings = BertEmbeddings(self.config)
    layer_cls = remat_block(BertLayer, self.config.remat, deterministic_argnum=3)
    self.layer = [layer_cls(self.config) for _ in range(self.config.num_hidden_layers)]

  def __call__(
    self,
    inputs_embeds: jax.Array | None = None,
    *,
    input_ids: jax.Array | None = None,
    attention_mask: jax.Array | None = None,
    token_type_ids: jax.Array | None = None,
    deterministic: bool = True,
    return_aux: bool = False,
  ):
    """Runs the encoder.

    Args:
      inputs_embeds: [batch, seq, embed] (STH-SepNet's patch embeddings), or None with `input_ids`;
        token-type 0 and position embeddings are added to it, as HF does.
      input_ids: [batch, seq] int token ids, looked up in `word_embeddings`.
      attention_mask: [batch, seq], 1 (or True) = a real token, 0 = padding that no query attends
        to (every position still gets an output); None = attend to all.
      token_type_ids: [batch, seq] int segment ids; None = 0 everywhere.
      deterministic: False enables dropout (needs a 'dropout' rng when a dropout rate is > 0).
      return_aux: also return an aux loss (always 0: the backbone contract of GPT-2 and Llama).

    Returns:
      last hidden state [batch, seq, embed] in the compute dtype, or (hidden, 0.0).
    """
    if (inputs_embeds is None) == (input_ids is None):
      raise ValueError("Bert: pass exactly one of inputs_embeds and input_ids")
    x = self.embeddings(inputs_embeds, input_ids, token_type_ids, deterministic=deterministic)
    mask = None
    if attention_mask is not None:
      if tuple(attention_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
          f"Bert: attention_mask has shape {tuple(attention_mask.shape)}, expected "
          f"[batch, seq] = {tuple(x.shape[:2])}"
        )
      mask = (jnp.asarray(attention_mask) != 0)[:, None, None, :]  # [batch, heads=1, q=1, k]
    for layer in self.layer:
      x = layer(x, mask, deterministic)
    return (x, jnp.zeros((), jnp.float32)) if return_aux else x
