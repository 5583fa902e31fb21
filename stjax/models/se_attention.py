"""SE-Attention: GPT-2 attention whose q/k are rotated in time and in space.

It is a `GPT2Attention` subclass: the pretrained `c_attn` (fused q|k|v) and `c_proj` are reused
unchanged, only q and k are rotated before attention (rotations have no parameters, so a
pretrained GPT-2 loads as is).

Modes (`se_mode`):
- `split`: in every head, the first `temporal_dims` dims get temporal RoPE (angle = time offset of
  the token in steps times omega_j), the remaining dims get spatial RoPE (angle = the token's node
  phase phi[n, j] = s(e_n)[j] * omega_j). q.k = (time part, depends on the time difference)
  + (space part, depends on phi[n] - phi[m]).
- `dual`: two attentions over the same v, one with all head dims time-rotated, one with all dims
  space-rotated. Implemented as ONE attention call with 2 x heads (time heads, then space heads) so
  the fused kernel is used; the two outputs [2d] are concatenated and mapped back to d by `merge`
  (initialised to the average of the two), then `c_proj` as usual.

Angles are computed once per forward by `SERotary` (shared by all blocks) and reach every block
through `GPT2(..., attention_kwargs={"time_angles": ..., "space_angles": ...})`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.models.gpt2 import GPT2Attention
from stjax.models.rope import NodePhases, apply_rotary, temporal_angles

SE_MODES = ("split", "dual")


def rotary_dims(head_dim: int, mode: str, temporal_dims: int) -> tuple[int, int]:
  """(time-rotated dims, space-rotated dims) per head for a mode; validates the split."""
  if mode not in SE_MODES:
    raise UserError(f"model.se_mode: {mode!r} is not one of {', '.join(SE_MODES)}")
  if mode == "dual":
    if head_dim % 2:
      raise UserError(f"model: head dim n_embd/n_head = {head_dim} must be even for rotary embeddings")
    return head_dim, head_dim
  if temporal_dims % 2 or (head_dim - temporal_dims) % 2 or not 0 <= temporal_dims <= head_dim:
    raise UserError(f"model.temporal_dims: must be even and in 0..head dim {head_dim} with an even rest, "
                    f"got {temporal_dims}")
  return temporal_dims, head_dim - temporal_dims


class SERotary(nn.Module):
  """Rotation angles of every token, computed once per forward.

  Attributes:
    head_dim, mode, temporal_dims: as in `SEAttention`.
    base: RoPE base (10000 as in RoPE).
  """

  head_dim: int
  mode: str = "split"
  temporal_dims: int = 32
  base: float = 10000.0

  @nn.compact
  def __call__(self, time_pos: jnp.ndarray, node_emb: jnp.ndarray, token_node: jnp.ndarray) -> dict:
    """Args:
      time_pos: [seq] time offset of each token in steps (e.g. its patch's last step; may be < 0).
      node_emb: [nodes, embed] learnable node embeddings e_n.
      token_node: [seq] int node of each token.
    Returns: {"time_angles": [seq, td/2], "space_angles": [seq, sd/2]} (float32).
    """
    td, sd = rotary_dims(self.head_dim, self.mode, self.temporal_dims)
    phases = NodePhases(sd, self.base, name="node_phases")(node_emb) if sd else jnp.zeros((node_emb.shape[0], 0))
    return {"time_angles": temporal_angles(time_pos, td, self.base), "space_angles": phases[token_node]}


def _half_identity(key, shape, dtype=jnp.float32):
  """[2d, d] kernel [I/2; I/2]: the merged output starts as the mean of the two attentions."""
  del key
  d = shape[1]
  return (jnp.concatenate([jnp.eye(d), jnp.eye(d)], axis=0) / 2).astype(dtype)


class SEAttention(GPT2Attention):
  """GPT-2 attention with SE rotations (see module docstring).

  Attributes (besides `config`; full vs causal comes from `config.causal`):
    mode: "split" or "dual".
    temporal_dims: per-head time-rotated dims in `split` mode.
  """

  mode: str = "split"
  temporal_dims: int = 32

  def setup(self):
    super().setup()
    self.dims = rotary_dims(self.config.head_dim, self.mode, self.temporal_dims)
    if self.mode == "dual":
      d = self.config.n_embd
      self.merge = nn.Dense(d, use_bias=False, kernel_init=_half_identity, dtype=self.config.compute_dtype,
                            param_dtype=jnp.float32)

  def transform_qk(self, q, k, *, time_angles: jnp.ndarray, space_angles: jnp.ndarray, **kwargs):
    """q, k: [batch, seq, heads, head_dim]; angles [seq, td/2], [seq, sd/2].

    Returns q, k rotated: [batch, seq, heads, head_dim] (split) or [batch, seq, 2 heads, head_dim]
    (dual: time-rotated heads, then space-rotated heads).
    """
    del kwargs
    t_ang, s_ang = time_angles[:, None, :], space_angles[:, None, :]
    td, _ = self.dims

    def rotate(x):
      if self.mode == "dual":
        return jnp.concatenate([apply_rotary(x, t_ang), apply_rotary(x, s_ang)], axis=2)
      parts = []
      if td:
        parts.append(apply_rotary(x[..., :td], t_ang))
      if td < x.shape[-1]:
        parts.append(apply_rotary(x[..., td:], s_ang))
      return jnp.concatenate(parts, axis=-1)

    return rotate(q), rotate(k)

  def attend(self, q, k, v, *, deterministic: bool):
    if self.mode == "dual":
      v = jnp.concatenate([v, v], axis=2)
    return super().attend(q, k, v, deterministic=deterministic)

  def out(self, o, *, deterministic: bool):
    """o: [batch, seq, heads (x2 in dual), head_dim] -> [batch, seq, embed]."""
    if self.mode == "dual":
      b, s = o.shape[:2]
      o = self.merge(o.reshape(b, s, -1)).reshape(b, s, self.config.n_head, self.config.head_dim)
    return super().out(o, deterministic=deterministic)

