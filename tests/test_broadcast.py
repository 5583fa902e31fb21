"""stjax.kernels.broadcast.over_leading: forward = broadcast_to, gradient = float64 sum over the
leading axes with either kernel (XLA's sum, CPU's ones-vector matmul), also jitted and with the
batch axis sharded over 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stjax.kernels.broadcast import over_leading


@pytest.mark.parametrize("kernel", ["xla", "ones_matmul"])
@pytest.mark.parametrize("lead,shape", [((8,), (207, 16)), ((2, 3), (5, 7)), ((4,), ())])
def test_value_and_gradient(rng, lead, shape, kernel):
  p = rng.standard_normal(shape).astype(np.float32)
  cot = rng.standard_normal(lead + shape).astype(np.float32)
  y, vjp = jax.vjp(lambda p: over_leading(p, lead, kernel), jnp.asarray(p))
  np.testing.assert_array_equal(np.asarray(y), np.broadcast_to(p, lead + shape))
  (grad,) = vjp(jnp.asarray(cot))
  want = cot.astype(np.float64).sum(axis=tuple(range(len(lead))))
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kernel", ["xla", "ones_matmul"])
def test_sharded_batch_gradient(rng, kernel):
  mesh = jax.make_mesh((8,), ("data",))
  x = jax.device_put(
    jnp.asarray(rng.standard_normal((16, 30, 4)).astype(np.float32)), NamedSharding(mesh, P("data"))
  )
  p = jnp.asarray(rng.standard_normal((30, 4)).astype(np.float32))
  loss = lambda p, x: jnp.sum(jnp.sin(x * over_leading(p, x.shape[:1], kernel)))  # noqa: E731
  got = jax.jit(jax.grad(loss))(p, x)
  want = jax.grad(lambda p, x: jnp.sum(jnp.sin(x * p)))(p, np.asarray(x))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
