"""MRFFN: retrieval and EMA write against NumPy, gradient routing, memory state through jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.kernels import default_kernel_config, resolve_kernels
from stjax.kernels.experts import uses_grouped
from stjax.models.st_link.memory import MRFFN, ExpertMixture, MemoryRetrieval, memory_stats


def np_retrieve(q, keys, values, k, tau):
  """float64 reference: cosine, top-k by sort, softmax(cos / tau) weights."""
  qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
  kn = keys / np.linalg.norm(keys, axis=-1, keepdims=True)
  cos = qn @ kn.T
  idx = np.argsort(-cos, axis=-1)[:, :k]
  top = np.take_along_axis(cos, idx, -1) / tau
  w = np.exp(top - top.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum("tk,tkv->tv", w, values[idx]), idx


def _memory(rng, m=8, dk=6, d=10, k=3, alpha=0.2, reseed_after=0):
  mod = MemoryRetrieval(
    memory_size=m, key_dim=dk, value_dim=d, top_k=k, tau=0.5, alpha=alpha, reseed_after=reseed_after
  )
  h = jnp.asarray(rng.normal(size=(2, 5, d)), jnp.float32)
  variables = mod.init(jax.random.key(0), h, update=False)
  return mod, variables, h


def _queries(variables, h):
  p = variables["params"]["query"]
  return np.asarray(h, np.float64).reshape(-1, h.shape[-1]) @ np.asarray(
    p["kernel"], np.float64
  ) + np.asarray(p["bias"])


def test_retrieval_matches_numpy_topk(rng):
  mod, variables, h = _memory(rng)
  r = mod.apply(variables, h, update=False)
  want, _ = np_retrieve(
    _queries(variables, h),
    np.asarray(variables["memory"]["keys"], np.float64),
    np.asarray(variables["params"]["values"], np.float64),
    3,
    0.5,
  )
  np.testing.assert_allclose(np.asarray(r).reshape(-1, 10), want, rtol=1e-4, atol=1e-6)


def test_one_ema_step_equals_formula_and_unselected_slots_stay(rng):
  m, alpha = 16, 0.2
  mod, variables, h = _memory(rng, m=m, k=2, alpha=alpha)
  keys0 = np.asarray(variables["memory"]["keys"], np.float64)
  _, new = mod.apply(variables, h, update=True, mutable=["memory"])
  q = _queries(variables, h)
  _, idx = np_retrieve(q, keys0, np.zeros((m, 1)), 2, 0.5)
  qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
  want = keys0.copy()
  selected = set(idx.ravel().tolist())
  for slot in selected:
    mean_q = qn[(idx == slot).any(-1)].mean(0)
    v = (1 - alpha) * keys0[slot] + alpha * mean_q
    want[slot] = v / np.linalg.norm(v)
  got = np.asarray(new["memory"]["keys"])
  np.testing.assert_allclose(got, want, atol=1e-5)
  unselected = sorted(set(range(m)) - selected)
  assert unselected, "test needs at least one unselected slot"
  np.testing.assert_array_equal(got[unselected], np.asarray(variables["memory"]["keys"])[unselected])
  idle = np.asarray(new["memory"]["idle_steps"])
  assert all(idle[s] == 0 for s in selected) and all(idle[s] == 1 for s in unselected)
  counts = np.bincount(idx.ravel(), minlength=m)
  np.testing.assert_allclose(new["memory"]["usage"], alpha * counts / counts.sum(), atol=1e-6)


def test_dead_slots_are_reseeded_with_worst_served_queries(rng):
  mod, variables, h = _memory(rng, m=8, k=1, reseed_after=3)
  variables = {**variables, "memory": {**variables["memory"], "idle_steps": jnp.full((8,), 2, jnp.int32)}}
  _, new = mod.apply(variables, h, update=True, mutable=["memory"])
  q = _queries(variables, h)
  keys0 = np.asarray(variables["memory"]["keys"], np.float64)
  qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
  _, idx = np_retrieve(q, keys0, np.zeros((8, 1)), 1, 0.5)
  dead = sorted(set(range(8)) - set(idx.ravel().tolist()))
  worst = np.argsort((qn @ (keys0 / np.linalg.norm(keys0, axis=-1, keepdims=True)).T).max(-1))
  for rank, slot in enumerate(dead):
    np.testing.assert_allclose(new["memory"]["keys"][slot], qn[worst[rank]], atol=1e-5)
  np.testing.assert_array_equal(new["memory"]["idle_steps"], 0)


@pytest.mark.parametrize("kernel", ["dense", "grouped", "ragged"])
def test_expert_mixture_matches_numpy(rng, kernel):
  mix = ExpertMixture(num_experts=4, top_k=2, hidden=5, features=3, kernel=kernel, block_rows=4)
  z = jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)
  variables = mix.init(jax.random.key(0), z)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  p["b1"] = rng.normal(size=p["b1"].shape)
  out, balance = mix.apply({"params": p}, z)
  zz = np.asarray(z, np.float64)
  logits = zz @ p["router"]["kernel"] + p["router"]["bias"]
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  want = np.zeros((7, 3))
  frac = np.zeros(4)
  for t in range(7):
    top = np.argsort(-probs[t])[:2]
    g = probs[t, top] / probs[t, top].sum()
    for e, ge in zip(top, g):
      hid = zz[t] @ p["w1"][e] + p["b1"][e]
      hid = 0.5 * hid * (1 + np.tanh(np.sqrt(2 / np.pi) * (hid + 0.044715 * hid**3)))
      want[t] += ge * (hid @ p["w2"][e] + p["b2"][e])
      frac[e] += 1 / 14
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(balance, 4 * np.sum(frac * probs.mean(0)), rtol=1e-5)


def test_min_rows_kernel_and_auto_resolution():
  """`min_rows` is grouped when that has fewer rows; `auto` resolves to it on one CPU device only
  (the batch-wide sort of the grouped kernel would be replicated on every device of a mesh)."""
  assert uses_grouped("min_rows", 1000, 2, 4, 4)  # 2000 (token, expert) rows in 503 blocks of 4 < 4000
  assert not uses_grouped("min_rows", 1, 2, 4, 4)  # 1 token: 4 blocks of 4 rows = 16 > 4 dense rows
  assert uses_grouped("grouped", 1, 2, 4, 4) and not uses_grouped("dense", 1000, 2, 4, 4)
  auto = default_kernel_config()
  assert resolve_kernels(auto, backend="cpu", num_devices=1).experts == "min_rows"
  assert resolve_kernels(auto, backend="cpu", num_devices=2).experts == "dense"
  assert resolve_kernels(auto, backend="gpu", num_devices=1).experts == "dense"
  assert resolve_kernels(auto, backend="tpu", num_devices=1).experts == "dense"


@pytest.mark.parametrize("other", ["grouped", "ragged"])
def test_grouped_dispatch_gradients_equal_dense(rng, other):
  """Grouped dispatch (blocks of 8 rows, padded runs, gather-transposes) and ragged dispatch
  (jax.lax.ragged_dot over expert-sorted rows) = dense: outputs and all grads."""
  z = jnp.asarray(rng.normal(size=(3, 11, 10)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(3, 11, 6)), jnp.float32)
  results = []
  for kernel in ("dense", other):
    mix = ExpertMixture(num_experts=5, top_k=2, hidden=7, features=6, kernel=kernel, block_rows=8)
    params = mix.init(jax.random.key(0), z)["params"]
    params = (
      {
        **params,
        "b1": jnp.asarray(rng.normal(size=(5, 7)), jnp.float32),
        "b2": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32),
      }
      if not results
      else results[0][2]
    )

    def loss(p, z, mix=mix):
      out, balance = mix.apply({"params": p}, z)
      return jnp.sum(out * cot) + balance, out

    (g_p, g_z), out = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, z)
    results.append((g_p, g_z, params, out))
  (gp_d, gz_d, _, out_d), (gp_g, gz_g, _, out_g) = results
  np.testing.assert_allclose(out_g, out_d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gz_g, gz_d, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(gp_g), jax.tree.leaves(gp_d)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(gz_d).max()) > 0 and float(jnp.abs(gp_d["w2"]).max()) > 0


def test_benchmark_ragged_dot_dispatch_equals_grouped(rng):
  """benchmarks/expert_dispatch.py's jax.lax.ragged_dot dispatch (an independent implementation)
  gives the grouped dispatch's outputs and gradients."""
  from benchmarks.expert_dispatch import ragged_experts
  from stjax.kernels.experts import grouped_experts

  t, dz, e, k = 37, 10, 5, 2
  z = jnp.asarray(rng.normal(size=(t, dz)), jnp.float32)
  weights = tuple(
    jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((e, dz, 7), (e, 7), (e, 7, 6), (e, 6))
  )
  top_p, top_i = jax.lax.top_k(jax.nn.softmax(jnp.asarray(rng.normal(size=(t, e)), jnp.float32)), k)
  gates = top_p / top_p.sum(-1, keepdims=True)
  cot = jnp.asarray(rng.normal(size=(t, 6)), jnp.float32)
  grads = [
    jax.grad(lambda z, w, f=f: jnp.sum(f(z, w) * cot), argnums=(0, 1))(z, weights)
    for f in (
      lambda z, w: grouped_experts(z, top_i, gates, *w, 8),
      lambda z, w: ragged_experts(z, top_i, gates, *w),
    )
  ]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _mrffn(rng):
  mod = MRFFN(features=8, memory_size=6, key_dim=4, top_k=2, num_experts=3, expert_hidden=5, alpha=0.3)
  h = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  a = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  return mod, mod.init(jax.random.key(0), h, attn_out=a), h, a


def test_gradients_reach_values_and_router_not_keys(rng):
  mod, variables, h, a = _mrffn(rng)

  def loss(params, keys):
    memory = {"memory": {**variables["memory"]["memory"], "keys": keys}}
    (out, aux), _ = mod.apply(
      {"params": params, "memory": memory}, h, attn_out=a, deterministic=False, mutable=["memory"]
    )
    return jnp.sum(out**2) + aux

  g_params, g_keys = jax.jit(jax.grad(loss, argnums=(0, 1)))(
    variables["params"], variables["memory"]["memory"]["keys"]
  )
  assert float(jnp.abs(g_params["memory"]["values"]).max()) > 0
  assert float(jnp.abs(g_params["memory"]["query"]["kernel"]).max()) > 0
  assert float(jnp.abs(g_params["experts"]["router"]["kernel"]).max()) > 0
  assert float(jnp.abs(g_params["experts"]["w1"]).max()) > 0
  assert float(jnp.abs(g_keys).max()) == 0
  assert "keys" not in str(jax.tree_util.tree_structure(variables["params"]))


def test_memory_state_flows_through_jit_and_eval_leaves_it(rng):
  mod, variables, h, a = _mrffn(rng)
  traces = []

  @jax.jit
  def train_step(params, memory, h):
    traces.append(1)
    (out, aux), new_state = mod.apply(
      {"params": params, "memory": memory}, h, attn_out=a, deterministic=False, mutable=["memory"]
    )
    return out, aux, new_state["memory"]

  memory = variables["memory"]
  for step in range(3):
    out, aux, new_memory = train_step(variables["params"], memory, h + step)
    assert not np.allclose(new_memory["memory"]["keys"], memory["memory"]["keys"])
    assert out.shape == h.shape and np.isfinite(float(aux))
    memory = new_memory
  assert len(traces) == 1
  assert float(jnp.abs(memory["memory"]["usage"]).sum()) > 0
  # Eval: same shapes, and a mutable apply returns the collection unchanged.
  (out_eval, _), state = mod.apply(
    {"params": variables["params"], "memory": memory}, h, attn_out=a, deterministic=True, mutable=["memory"]
  )
  assert out_eval.shape == out.shape
  for x, y in zip(jax.tree.leaves(state["memory"]), jax.tree.leaves(memory)):
    np.testing.assert_array_equal(x, y)
  stats = memory_stats(memory)
  assert (
    0 < float(stats["memory_active_fraction"]) <= 1 and 0 < float(stats["memory_effective_fraction"]) <= 1
  )
