"""What the GPT-2 and Llama trunks share: the pre-norm block and the trunk's call (as base
classes), LoRA-aware projections and config conveniences.

Every module, and so every parameter name, is created by the family's own `setup`
(`stjax.models.backbones.gpt2`, `stjax.models.backbones.llama`): the bases hold the logic, not the parameter trees.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.layers.lora import LoRADense, lora_applies

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# `remat` of a backbone config: what each block keeps for the backward pass (the rest is recomputed).
REMAT_NAMED = {
  "block": "dots_with_no_batch_dims_saveable",  # outputs of the weight matmuls (q/k/v, MLP, projections)
  "full": "nothing_saveable",  # only the block's input: the whole block is recomputed
}

# attention_factory / extra_ffn_factory of a trunk: block index -> (() -> module) | None
BlockFactory = Callable[[int], Callable[[], nn.Module] | None]


def remat_policy(name: str):
  """`remat` -> (None for "none", else a `jax.checkpoint` policy): "block", "full", or the name of
  any policy in `jax.checkpoint_policies` (e.g. "dots_saveable"). UserError naming the field otherwise."""
  if name == "none":
    return None
  policy = getattr(jax.checkpoint_policies, REMAT_NAMED.get(name, name), None)
  known = [n for n in dir(jax.checkpoint_policies) if n.endswith("saveable") and not n.startswith("save_")]
  if policy is None or name.startswith("_") or (name not in REMAT_NAMED and name not in known):
    raise UserError(
      f"config.model.remat: {name!r} is not none, block, full or a jax.checkpoint_policies name ({', '.join(known)})"
    )
  return policy


def remat_block(block_cls: type[nn.Module], name: str, deterministic_argnum: int = 2) -> type[nn.Module]:
  """`block_cls` rematerialised per `remat_policy(name)` (unchanged for "none"); its call takes
  `deterministic` positionally at `deterministic_argnum` (self = 0), static. Parameter names do not
  change, so checkpoints and converted weights fit either way."""
  policy = remat_policy(name)
  if policy is None:
    return block_cls
  return nn.remat(block_cls, policy=policy, static_argnums=(deterministic_argnum,))


class ConfigMixin:
  """For frozen config dataclasses with `dtype`, `lora_rank` and `lora_alpha` fields."""

  @property
  def compute_dtype(self) -> Any:
    return COMPUTE_DTYPES[self.dtype]

  @property
  def lora_scale_alpha(self) -> float:
    return float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def _coerce_kernels(self) -> None:
    """`kernels` given as a mapping (a config read from JSON) becomes a `Kernels`."""
    if isinstance(self.kernels, Mapping):
      object.__setattr__(self, "kernels", Kernels(**self.kernels))


class LoRAProjections(nn.Module):
  """Mixin: builds a LoRA-aware Dense ([in, out] kernel) named for its place in the tree.

  `self.config` supplies lora_rank / lora_targets / lora_scale_alpha / compute_dtype; a subclass
  sets `use_projection_bias = False` for bias-free projections.
  """

  use_projection_bias = True  # class constant, not a module field

  def dense(self, features: int, axes: tuple[str, str], name: str) -> LoRADense:
    cfg = self.config
    path = tuple(self.scope.path) + (name,) if self.scope is not None else (name,)
    rank = cfg.lora_rank if cfg.lora_rank > 0 and lora_applies(path, cfg.lora_targets) else 0
    return LoRADense(
      features,
      kernel_axes=axes,
      rank=rank,
      alpha=cfg.lora_scale_alpha,
      use_bias=self.use_projection_bias,
      dtype=cfg.compute_dtype,
      param_dtype=jnp.float32,
    )


class PreNormBlock(nn.Module):
  """Base of GPT2Block and LlamaBlock: x + attn(norm_1 x), then + mlp(norm_2 x) [+ extra_ffn(norm_2 x)].

  A subclass's `setup` builds the parts under its family's parameter names (the attention with
  `build_attention`, the extra FFN with `build_extra_ffn` at `extra_ffn`) and `parts()` returns them.

  Attributes:
    config: the family's config.
    attention_factory: builds the attention module (default: the family's own); it is called as
      `attn(h, deterministic=..., **attention_kwargs)`.
    extra_ffn_factory: builds an optional module named `extra_ffn`, called as
      `extra(h2, attn_out=a, deterministic=...) -> (out [batch, seq, embed], aux_loss scalar)`;
      `out` is ADDED to the pretrained MLP's output (which keeps its params at `mlp/...`).
  """

  config: Any
  attention_factory: Callable[[], nn.Module] | None = None
  extra_ffn_factory: Callable[[], nn.Module] | None = None

  def parts(self) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """(norm_1, attn, norm_2, mlp) of this block."""
    raise NotImplementedError

  def build_attention(self, default: Callable[[Any], nn.Module]) -> nn.Module:
    """attention_factory() or default(config) (call in `setup`, assign under the family's name)."""
    return self.attention_factory() if self.attention_factory else default(self.config)

  def build_extra_ffn(self) -> nn.Module | None:
    """The optional extra FFN (call in `setup`, assign to `self.extra_ffn`)."""
    return self.extra_ffn_factory() if self.extra_ffn_factory else None

  def __call__(
    self, x: jax.Array, deterministic: bool = True, attention_kwargs: Mapping[str, Any] | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """x: [batch, seq, embed] -> (x [batch, seq, embed], aux_loss scalar float32). Positional
    arguments, so `remat_block` can mark `deterministic` static."""
    norm_1, attn, norm_2, mlp = self.parts()
    a = attn(norm_1(x), deterministic=deterministic, **dict(attention_kwargs or {}))
    x = x + a
    h2 = norm_2(x)
    m = mlp(h2, deterministic=deterministic)
    aux = jnp.zeros((), jnp.float32)
    if self.extra_ffn is not None:
      extra, extra_aux = self.extra_ffn(h2, attn_out=a, deterministic=deterministic)
      m = m + extra
      aux = aux + jnp.asarray(extra_aux, jnp.float32)
    return x + m, aux


class DecoderTrunk(nn.Module):
  """Base of the GPT-2 and Llama trunks: (inputs_embeds | input_ids) -> blocks -> final norm.

  A subclass's `setup` builds its modules under its family's parameter names (blocks with
  `make_blocks`); `parts()` returns (token embedding, blocks, final norm) and `add_positions`
  adds what the family adds to the input embeddings before the first block (nothing by default).

  Attributes:
    config: the family's config; its block count sets how many blocks are built.
    attention_factory: `i -> (() -> attention module)` per block index, or None (the family's).
    extra_ffn_factory: `i -> (() -> module) | None` per block index, or None (no extra FFN).
  """

  config: Any
  attention_factory: BlockFactory | None = None
  extra_ffn_factory: BlockFactory | None = None

  def make_blocks(self, block_cls: type[nn.Module], num_blocks: int) -> list[nn.Module]:
    """`num_blocks` blocks with their per-index factories (call in `setup`, assign to a field),
    rematerialised as `config.remat` asks."""
    block_cls = remat_block(block_cls, self.config.remat)
    return [
      block_cls(
        self.config,
        attention_factory=self.attention_factory(i) if self.attention_factory else None,
        extra_ffn_factory=self.extra_ffn_factory(i) if self.extra_ffn_factory else None,
      )
      for i in range(num_blocks)
    ]

  def parts(self) -> tuple[nn.Embed, Sequence[nn.Module], nn.Module]:
    """(token embedding, blocks, final norm) of this trunk."""
    raise NotImplementedError

  def add_positions(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """x: [batch, seq, embed] input embeddings -> what the first block sees. Identity here."""
    del deterministic
    return x

  def __call__(
    self,
    inputs_embeds: jax.Array | None = None,
    *,
    input_ids: jax.Array | None = None,
    deterministic: bool = True,
    attention_kwargs: Mapping[str, Any] | None = None,
    return_aux: bool = False,
  ):
    """Runs the trunk.

    Args:
      inputs_embeds: [batch, seq, embed] (stjax models feed these), or None with `input_ids`.
      input_ids: [batch, seq] int token ids, looked up in the token embedding.
      deterministic: False enables dropout (needs a 'dropout' rng when a dropout rate is > 0).
      attention_kwargs: passed to every block's attention (e.g. `positions` [seq] or
        [batch, seq] for Llama's rotary attention).
      return_aux: also return the summed aux loss of the extra FFNs.

    Returns:
      last hidden state [batch, seq, embed] in the compute dtype, or (hidden, aux scalar).
    """
    token_embed, blocks, final_norm = self.parts()
    if (inputs_embeds is None) == (input_ids is None):
      raise ValueError(f"{type(self).__name__}: pass exactly one of inputs_embeds and input_ids")
    table = token_embed.embedding  # always create the table so checkpoints fit the tree
    del table
    dtype = self.config.compute_dtype
    x = token_embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(dtype)
    x = self.add_positions(x, deterministic=deterministic)
    aux = jnp.zeros((), jnp.float32)
    for block in blocks:
      x, block_aux = block(x, deterministic, attention_kwargs)
      aux = aux + block_aux
    x = final_norm(x)
    return (x, aux) if return_aux else x
