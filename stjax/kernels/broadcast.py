"""Parameters broadcast over leading (batch) axes, with a choice of how their gradient is summed.

The gradient of a parameter p broadcast over leading axes is a sum over those axes only. XLA CPU's
YNNPACK reduction is very slow for that pattern when many elements are kept (`python
benchmarks/leading_sums.py`: [8, 207, 256] summed over axis 0 takes 7.8 ms, as a ones-vector
matmul 0.11 ms; [16, 207, 42, 8] 17.8 vs 0.32 ms; [64, 325, 768] 274 vs 3.2 ms). The kernel
`ones_matmul` sums the cotangent with that matmul (float32 accumulation); `xla` keeps XLA's sum
(what accelerators run). `config.kernels.leading_sum` chooses; `auto` is `ones_matmul` on CPU.

    y = x + over_leading(wpe[:seq], x.shape[:1], kernel)      # [seq, d] -> [batch, seq, d]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LEADING_SUM_KERNELS = ("xla", "ones_matmul")


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def over_leading(p: jax.Array, lead: tuple[int, ...], kernel: str = "xla") -> jax.Array:
  """p: [...] -> [*lead, ...] (jnp.broadcast_to); the VJP sums the cotangent over `lead` with `kernel`."""
  if kernel not in LEADING_SUM_KERNELS:
    raise ValueError(f"leading-sum kernel {kernel!r} is not one of {', '.join(LEADING_SUM_KERNELS)}")
  return jnp.broadcast_to(p, tuple(lead) + p.shape)


def _over_leading_fwd(p, lead, kernel):
  return over_leading(p, lead, kernel), None


def _over_leading_bwd(lead, kernel, _, g):
  if kernel == "xla":
    return (jnp.sum(g, axis=tuple(range(len(lead)))),)
  total = jnp.tensordot(
    jnp.ones(lead, g.dtype),
    g,
    axes=len(lead),
    preferred_element_type=jnp.float32,
    precision=jax.lax.Precision.HIGHEST,
  )
  return (total.astype(g.dtype),)


over_leading.defvjp(_over_leading_fwd, _over_leading_bwd)
