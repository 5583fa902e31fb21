"""STH-SepNet temporal stream: one pooled series through a frozen language model (TimeLLM style).

    x [B, T_in, N, C] -> mean over nodes -> [B*C, T_in] -> replication pad (stride) -> patches
    (patch_len, stride) -> patch embedding (circular Conv over the patch axis) -> reprogramming
    cross-attention onto K text prototypes (Linear over the vocab axis of the frozen token table)
    -> frozen LM with LoRA -> first d_ff features of every patch token -> flatten -> Dense(T_out)
    -> [B, T_out, N, C] (the same forecast for every node).

With `prompt_ids` [B, L] (optional), the LM input is [prompt token embeddings ; patch tokens], as
in the released code, and the head still reads the last P (patch) tokens.

The LM is any backbone of `stjax.models.backbones` (GPT-2, Llama, BERT), built by the parent model so
its parameters live at `params["llm"]`; this module only calls it and reads its token table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from stjax.layers.dropout import Dropout
from stjax.models.backbones import token_table_module


def replication_pad_patches(series: jax.Array, patch_len: int, stride: int) -> jax.Array:
  """series [B, T] -> patches [B, P, patch_len], after padding the end with `stride` copies of the
  last value (TimeLLM/PatchTST); P = (T + stride - patch_len) // stride + 1."""
  padded = jnp.concatenate([series, jnp.repeat(series[:, -1:], stride, axis=1)], axis=1)
  num_patches = (padded.shape[1] - patch_len) // stride + 1
  index = jnp.arange(num_patches)[:, None] * stride + jnp.arange(patch_len)[None, :]
  return padded[:, index]


def num_patches(input_len: int, patch_len: int, stride: int) -> int:
  return (input_len + stride - patch_len) // stride + 1


class Reprogramming(nn.Module):
  """TimeLLM reprogramming: patches attend over text prototypes.

  target: [B, P, d_model]; prototypes: [K, d_llm] -> [B, P, d_llm]. Queries from the patches,
  keys and values from the prototypes, `heads` heads of width `key_dim`.
  """

  heads: int
  key_dim: int
  out_dim: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, target: jax.Array, prototypes: jax.Array, deterministic: bool) -> jax.Array:
    b, p, _ = target.shape
    q = nn.Dense(self.heads * self.key_dim, name="query")(target).reshape(b, p, self.heads, self.key_dim)
    k = nn.Dense(self.heads * self.key_dim, name="key")(prototypes).reshape(-1, self.heads, self.key_dim)
    v = nn.Dense(self.heads * self.key_dim, name="value")(prototypes).reshape(-1, self.heads, self.key_dim)
    scores = jnp.einsum("bphe,khe->bhpk", q, k) / jnp.sqrt(self.key_dim).astype(q.dtype)
    attn = Dropout(self.dropout_rate)(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
    out = jnp.einsum("bhpk,khe->bphe", attn, v).reshape(b, p, self.heads * self.key_dim)
    return nn.Dense(self.out_dim, name="out")(out)


class TemporalStream(nn.Module):
  """x: [B, T_in, N, C] (the target channels) -> [B, T_out, N, C], constant over N.

  Attributes:
    llm: the (shared) backbone module, bound by the parent at `llm`.
    llm_family: "gpt2" | "llama" | "bert" (the backbone family).
    llm_width: the backbone's hidden size.
    output_len: T_out.
    patch_len, stride: patching (16, 8 in the paper).
    d_model: patch-embedding width.
    d_ff: features kept per LM output token (and reprogramming key width).
    heads: reprogramming heads.
    num_prototypes: K text prototypes (1000 in TimeLLM / STH-SepNet).
    reprogramming: False replaces the cross-attention by a Dense(d_model -> d_llm).
    dropout_rate: patch-embedding, attention and head dropout.
  """

  llm: nn.Module
  llm_family: str
  llm_width: int
  output_len: int
  patch_len: int = 16
  stride: int = 8
  d_model: int = 768
  d_ff: int = 128
  heads: int = 8
  num_prototypes: int = 1000
  reprogramming: bool = True
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(
    self, x: jax.Array, deterministic: bool = True, prompt_ids: jax.Array | None = None
  ) -> jax.Array:
    b, t, n, c = x.shape
    series = jnp.moveaxis(jnp.mean(x, axis=2), -1, 1).reshape(b * c, t)  # [B*C, T]
    patches = replication_pad_patches(series, self.patch_len, self.stride)  # [B*C, P, patch_len]
    kaiming = nn.initializers.variance_scaling(2.0 / (1 + 0.01**2), "fan_in", "normal")
    h = nn.Conv(
      self.d_model, (3,), padding="CIRCULAR", use_bias=False, kernel_init=kaiming, name="patch_embedding"
    )(patches)
    # The node mean removed the node axis: the tokens are split over the batch only. Saying so
    # also steers XLA's SPMD partitioner around a wrong gradient (jax 0.10.2: on a fsdp x nodes x
    # tensor mesh it all-reduced this conv kernel's gradient over every device, 4x too large).
    h = nn.with_logical_constraint(h, ("batch", None, None))  # [B*C, P, d_model]
    h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
    if self.reprogramming:
      table = jax.lax.stop_gradient(token_table_module(self.llm).embedding)
      prototypes = nn.Dense(self.num_prototypes, name="prototypes")(table.T.astype(h.dtype)).T
      h = Reprogramming(self.heads, self.d_ff, self.llm_width, self.dropout_rate, name="reprogramming")(
        h, prototypes, deterministic
      )
    else:
      h = nn.Dense(self.llm_width, name="to_llm")(h)
    num_patch_tokens = h.shape[1]
    if prompt_ids is not None:  # the frozen token table embeds the prompt (one per sample, every channel)
      prompt = jax.lax.stop_gradient(token_table_module(self.llm)(prompt_ids))  # [B, L, d_llm]
      h = jnp.concatenate([jnp.repeat(prompt, c, axis=0).astype(h.dtype), h], axis=1)
    hidden = self.llm(h, deterministic=deterministic)  # [B*C, L + P, d_llm]
    feats = hidden[:, -num_patch_tokens:, : self.d_ff].astype(h.dtype).reshape(b * c, -1)
    out = nn.Dense(self.output_len, name="head")(feats)
    out = Dropout(self.dropout_rate)(out, deterministic=deterministic)  # [B*C, T_out]
    out = jnp.moveaxis(out.reshape(b, c, self.output_len), 1, -1)  # [B, T_out, C]
    return jnp.broadcast_to(out[:, :, None, :], (b, self.output_len, n, c))
