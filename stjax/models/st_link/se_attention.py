"""SE-Attention: GPT-2 or Llama attention whose q/k are rotated in time and in space.

`SEAttention` subclasses `GPT2Attention` and `SELlamaAttention` subclasses `LlamaAttention`: the
pretrained projections (`c_attn`/`c_proj`, or `q/k/v/o_proj`) are reused unchanged, only q and k
are rotated before attention (rotations have no parameters, so a pretrained backbone loads as
is). Both share one implementation of the rotation (`SERotations`, `se_rotate`); on Llama it
replaces the backbone's own RoPE.

Modes (`se_mode`):
- `split`: in every head, `temporal_dims` dims get temporal RoPE (angle = time offset of the
  token in steps times omega_j), the remaining dims get spatial RoPE (angle = the token's node
  phase phi[n, j] = s(e_n)[j] * omega_j). q.k = (time part, depends on the time difference)
  + (space part, depends on phi[n] - phi[m]).
- `dual`: two attentions over the same v, one with all head dims time-rotated, one with all dims
  space-rotated. Implemented as ONE attention call with 2 x heads (time heads, then space heads;
  with GQA the K/V heads are doubled the same way, so query head h still reads K/V head
  h // group) so one attention call serves both; the two outputs [2 x heads x head_dim] are mapped back
  by `merge` (initialised to the average of the two), then the output projection as usual.

Which dims form the time part in `split` mode (`layout`; all rotations are `rope.apply_rotary`'s
"rotate half" pairing, the convention of HF Llama and of stjax's Llama):
- `blocks` (GPT-2): the first `temporal_dims` dims of a head are one rotary block (pairs
  (j, j + td/2)), the rest another (pairs (td + j, td + j + sd/2)). GPT-2 was never trained with
  rotations, so no pairing is privileged; this is ST-LINK's original layout.
- `pairs` (Llama): a pretrained Llama head rotates the pairs (j, j + head_dim/2) at omega_j, and
  its q/k projections are trained for that pairing. SE keeps it: the first td/2 PAIRS (dims
  j and j + head_dim/2 for j < td/2) are time-rotated, the other sd/2 pairs space-rotated, i.e.
  one `apply_rotary` over the whole head with the angles [time | space]. With td = head_dim and
  Llama's own frequencies (ST-LINK passes them as `SERotary.time_frequencies`) this IS Llama's
  RoPE at the tokens' time offsets. With td < head_dim the time pairs keep their pretrained
  frequencies omega_0..omega_{td/2-1}.
  (`blocks` on Llama would pair dims that were never rotated together in pretraining.)

Angles are computed once per forward by `SERotary` (shared by all blocks) and reach every block
through the trunk's `attention_kwargs={"time_angles": ..., "space_angles": ...}`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.layers.rope import NodePhases, apply_rotary, temporal_angles
from stjax.models.backbones.gpt2 import GPT2Attention
from stjax.models.backbones.llama import LlamaAttention

SE_MODES = ("split", "dual")
SE_LAYOUTS = ("blocks", "pairs")


def rotary_dims(head_dim: int, mode: str, temporal_dims: int) -> tuple[int, int]:
  """(time-rotated dims, space-rotated dims) per head for a mode; validates the split."""
  if mode not in SE_MODES:
    raise UserError(f"model.se_mode: {mode!r} is not one of {', '.join(SE_MODES)}")
  if mode == "dual":
    if head_dim % 2:
      raise UserError(f"model: head dim n_embd/n_head = {head_dim} must be even for rotary embeddings")
    return head_dim, head_dim
  if temporal_dims % 2 or (head_dim - temporal_dims) % 2 or not 0 <= temporal_dims <= head_dim:
    raise UserError(
      f"model.temporal_dims: must be even and in 0..head dim {head_dim} with an even rest, "
      f"got {temporal_dims}"
    )
  return temporal_dims, head_dim - temporal_dims


class SERotary(nn.Module):
  """Rotation angles of every token, computed once per forward.

  Attributes:
    head_dim, mode, temporal_dims: as in `SEAttention`.
    base: RoPE base (10000 as in RoPE) of the spatial phases, and of the time angles unless
      `time_frequencies` is given.
    time_frequencies: omega_j of the time angles ([td/2] floats), e.g. a pretrained Llama's own
      rotary frequencies; None = base^(-2j/td).
  """

  head_dim: int
  mode: str = "split"
  temporal_dims: int = 32
  base: float = 10000.0
  time_frequencies: tuple[float, ...] | None = None

  @nn.compact
  def __call__(self, time_pos: jnp.ndarray, node_emb: jnp.ndarray, token_node: jnp.ndarray) -> dict:
    """Args:
      time_pos: [seq] time offset of each token in steps (e.g. its patch's last step; may be < 0).
      node_emb: [nodes, embed] learnable node embeddings e_n.
      token_node: [seq] int node of each token.
    Returns: {"time_angles": [seq, td/2], "space_angles": [seq, sd/2]} (float32).
    """
    td, sd = rotary_dims(self.head_dim, self.mode, self.temporal_dims)
    phases = (
      NodePhases(sd, self.base, name="node_phases")(node_emb) if sd else jnp.zeros((node_emb.shape[0], 0))
    )
    if self.time_frequencies is None:
      time = temporal_angles(time_pos, td, self.base)
    else:
      if len(self.time_frequencies) != td // 2:
        raise ValueError(f"SERotary: {len(self.time_frequencies)} time frequencies for {td} time dims")
      omega = jnp.asarray(self.time_frequencies, jnp.float32)
      time = jnp.asarray(time_pos, jnp.float32)[..., None] * omega
    return {"time_angles": time, "space_angles": phases[token_node]}


def _half_identity(key, shape, dtype=jnp.float32):
  """[2d, d] kernel [I/2; I/2]: the merged output starts as the mean of the two attentions."""
  del key
  d = shape[1]
  return (jnp.concatenate([jnp.eye(d), jnp.eye(d)], axis=0) / 2).astype(dtype)


def se_rotate(
  x: jnp.ndarray,
  time_angles: jnp.ndarray,
  space_angles: jnp.ndarray,
  *,
  mode: str,
  temporal_dims: int,
  layout: str,
) -> jnp.ndarray:
  """The SE rotation of q or k (module docstring: modes and layouts).

  Args:
    x: [batch, seq, heads, head_dim] (any number of heads: q, or GQA's fewer K/V heads).
    time_angles: [seq, td/2]; space_angles: [seq, sd/2] (from `SERotary`).
    mode: split | dual; temporal_dims: td in split mode; layout: blocks | pairs (split mode).
  Returns: [batch, seq, heads, head_dim] (split) or [batch, seq, 2 heads, head_dim] (dual: the
    time-rotated heads, then the space-rotated heads).
  """
  t_ang, s_ang = time_angles[:, None, :], space_angles[:, None, :]
  if mode == "dual":
    return jnp.concatenate([apply_rotary(x, t_ang), apply_rotary(x, s_ang)], axis=2)
  if layout == "pairs":
    return apply_rotary(x, jnp.concatenate([t_ang, s_ang], axis=-1))
  td = temporal_dims
  parts = []
  if td:
    parts.append(apply_rotary(x[..., :td], t_ang))
  if td < x.shape[-1]:
    parts.append(apply_rotary(x[..., td:], s_ang))
  return jnp.concatenate(parts, axis=-1)


class SERotations(nn.Module):
  """Mixin (no fields of its own) for an attention class with `config.head_dim`,
  `config.compute_dtype` and the steps `transform_qk` -> `attend` -> `out`: SE rotations of q/k,
  doubled heads and `merge` in dual mode.

  The concrete class declares the fields `mode` and `temporal_dims`, sets `layout` and
  `num_heads_field` (its config's query-head count), and passes its `out` input through
  `merge_dual`.
  """

  layout = "blocks"  # class constants, not module fields
  num_heads_field = "n_head"

  def setup(self):
    super().setup()
    self.dims = rotary_dims(self.config.head_dim, self.mode, self.temporal_dims)
    if self.mode == "dual":
      width = getattr(self.config, self.num_heads_field) * self.config.head_dim
      self.merge = nn.Dense(
        width,
        use_bias=False,
        kernel_init=_half_identity,
        dtype=self.config.compute_dtype,
        param_dtype=jnp.float32,
      )

  def transform_qk(self, q, k, *, time_angles: jnp.ndarray, space_angles: jnp.ndarray, **kwargs):
    """q: [batch, seq, heads, head_dim], k: [batch, seq, kv heads, head_dim]; angles [seq, td/2],
    [seq, sd/2] -> q, k rotated (`se_rotate`; dual doubles the head axis of both)."""
    del kwargs
    rotate = lambda x: se_rotate(
      x,
      time_angles,
      space_angles,
      mode=self.mode,  # noqa: E731
      temporal_dims=self.dims[0],
      layout=self.layout,
    )
    return rotate(q), rotate(k)

  def attend(self, q, k, v, *, deterministic: bool):
    if self.mode == "dual":
      v = jnp.concatenate([v, v], axis=2)
    return super().attend(q, k, v, deterministic=deterministic)

  def merge_dual(self, o: jnp.ndarray) -> jnp.ndarray:
    """o: [batch, seq, heads (x2 in dual), head_dim] -> [batch, seq, heads, head_dim]."""
    if self.mode != "dual":
      return o
    b, s, h2, hd = o.shape
    return self.merge(o.reshape(b, s, -1)).reshape(b, s, h2 // 2, hd)


class SEAttention(SERotations, GPT2Attention):
  """GPT-2 attention with SE rotations (`blocks` layout; see the module docstring).

  Attributes (besides `config`; full vs causal comes from `config.causal`):
    mode: "split" or "dual".
    temporal_dims: per-head time-rotated dims in `split` mode.
  """

  mode: str = "split"
  temporal_dims: int = 32

  def out(self, o, *, deterministic: bool):
    """o: [batch, seq, heads (x2 in dual), head_dim] -> [batch, seq, embed]."""
    return super().out(self.merge_dual(o), deterministic=deterministic)


class SELlamaAttention(SERotations, LlamaAttention):
  """Llama (GQA) attention with SE rotations in place of its RoPE (`pairs` layout; see the module
  docstring). Attributes: as `SEAttention`."""

  layout = "pairs"
  num_heads_field = "num_attention_heads"
  mode: str = "split"
  temporal_dims: int = 32

  def out(self, o):
    """o: [batch, seq, heads (x2 in dual), head_dim] -> [batch, seq, embed]."""
    return super().out(self.merge_dual(o))


def se_attention_class(family: str) -> type[nn.Module]:
  """The SE-Attention class of a backbone family ('gpt2' | 'llama')."""
  return {"gpt2": SEAttention, "llama": SELlamaAttention}[family]
