"""Parameters broadcast over leading (batch) axes, with a gradient XLA CPU computes fast.

The gradient of a parameter p broadcast over leading axes is a sum over those axes only. XLA CPU's
YNNPACK reduction is very slow for that pattern when many elements are kept (`python
benchmarks/leading_sums.py`: [8, 207, 256] summed over axis 0 takes 7.8 ms, as a ones-vector
matmul 0.11 ms; [16, 207, 42, 8] 17.8 vs 0.32 ms; [64, 325, 768] 274 vs 3.2 ms). `over_leading`
broadcasts p and, on the CPU backend, sums its cotangent with that matmul (float32 accumulation);
other backends keep XLA's sum.

    y = x + over_leading(wpe[:seq], x.shape[:1])      # [seq, d] -> [batch, seq, d]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def over_leading(p: jax.Array, lead: tuple[int, ...]) -> jax.Array:
  """p: [...] -> [*lead, ...] (jnp.broadcast_to); the VJP sums the cotangent over `lead`."""
  return jnp.broadcast_to(p, tuple(lead) + p.shape)


def _over_leading_fwd(p, lead):
  return over_leading(p, lead), None


def _over_leading_bwd(lead, _, g):
  if jax.default_backend() != "cpu":
    return (jnp.sum(g, axis=tuple(range(len(lead)))),)
  total = jnp.tensordot(jnp.ones(lead, g.dtype), g, axes=len(lead), preferred_element_type=jnp.float32,
                        precision=jax.lax.Precision.HIGHEST)
  return (total.astype(g.dtype),)


over_leading.defvjp(_over_leading_fwd, _over_leading_bwd)
