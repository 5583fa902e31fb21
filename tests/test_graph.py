"""Edge-list propagation, MixProp and the block-wise adaptive graph against dense float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.errors import UserError
from stjax.graph import (
  AdaptiveGraph,
  EdgeList,
  MixProp,
  blockwise_top_k,
  edge_list_from_dense,
  mixprop_operator,
  propagate,
)
from stjax.graph.adaptive import tie_break_noise


def random_graph(rng, n, e, isolated=()):
  """Random edge list with duplicates allowed and some nodes that touch no edge."""
  allowed = np.array([v for v in range(n) if v not in isolated])
  src = rng.choice(allowed, e)
  dst = rng.choice(allowed, e)
  w = rng.uniform(0.1, 2.0, e)
  dense = np.zeros((n, n))
  np.add.at(dense, (dst, src), w)
  g = EdgeList(
    jnp.asarray(src, jnp.int32), jnp.asarray(dst, jnp.int32), jnp.asarray(w, jnp.float32), num_nodes=n
  )
  return g, dense


def dense_mixprop_operator(a):
  a = a + np.eye(a.shape[0])
  return a / a.sum(1, keepdims=True)


def test_propagate_equals_dense_including_isolated_nodes(rng):
  g, dense = random_graph(rng, 13, 40, isolated=(2, 7))
  h = rng.normal(size=(3, 13, 5))  # nodes on axis 1
  got = jax.jit(lambda h, g: propagate(h, g, node_axis=1))(jnp.asarray(h, jnp.float32), g)
  want = np.einsum("vw,bwf->bvf", dense, h)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(got)[:, [2, 7]] == 0)
  got_t = propagate(jnp.asarray(h, jnp.float32), g.transpose(), node_axis=1)
  np.testing.assert_allclose(np.asarray(got_t), np.einsum("vw,bwf->bvf", dense.T, h), rtol=1e-5, atol=1e-5)


def test_mixprop_operator_is_row_normalised_a_plus_i(rng):
  g, dense = random_graph(rng, 11, 30, isolated=(4,))
  p = mixprop_operator(g)
  got = np.zeros((11, 11))
  np.add.at(got, (np.asarray(p.dst), np.asarray(p.src)), np.asarray(p.weight, np.float64))
  np.testing.assert_allclose(got, dense_mixprop_operator(dense), rtol=1e-6, atol=1e-7)


def test_mixprop_equals_dense_reference(rng):
  n, c, depth, beta = 9, 4, 2, 0.05
  g, dense = random_graph(rng, n, 25, isolated=(0,))
  x = rng.normal(size=(2, n, 6, c))  # [B, N, T, C]
  module = MixProp(features=7, depth=depth, beta=beta, node_axis=1)
  params = module.init(jax.random.key(0), jnp.asarray(x, jnp.float32), g)
  got = jax.jit(module.apply)(params, jnp.asarray(x, jnp.float32), g)
  p = dense_mixprop_operator(dense)
  hops, h = [x], x
  for _ in range(depth):
    h = beta * x + (1 - beta) * np.einsum("vw,bwtc->bvtc", p, h)
    hops.append(h)
  kernel = np.asarray(params["params"]["mlp"]["kernel"], np.float64)
  bias = np.asarray(params["params"]["mlp"]["bias"], np.float64)
  want = np.concatenate(hops, -1) @ kernel + bias
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_edge_list_from_dense_and_errors(rng):
  a = rng.uniform(size=(6, 6)) * (rng.uniform(size=(6, 6)) > 0.5)
  g = edge_list_from_dense(a)
  back = np.zeros((6, 6))
  np.add.at(back, (np.asarray(g.dst), np.asarray(g.src)), np.asarray(g.weight))
  np.testing.assert_allclose(back, a, rtol=1e-6)
  with pytest.raises(UserError, match="square"):
    edge_list_from_dense(np.ones((3, 4)))
  with pytest.raises(UserError, match="negative"):
    edge_list_from_dense(-np.eye(3))


def test_blockwise_top_k_matches_dense(rng):
  scores = jnp.asarray(rng.normal(size=(23, 17)), jnp.float32)
  want_v, want_i = jax.lax.top_k(scores, 5)
  for block in (1, 4, 23, 100):
    v, i = blockwise_top_k(lambda r: scores[r], 23, 5, block)
    np.testing.assert_array_equal(np.asarray(i), np.asarray(want_i))
    np.testing.assert_array_equal(np.asarray(v), np.asarray(want_v))


def dense_mtgnn(params, alpha, noise, k):
  """float64 NumPy MTGNN: (A [N, N], top-k columns per row of A + tie noise [N, k])."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  m1 = np.tanh(alpha * (p["emb1"] @ p["lin1"]["kernel"] + p["lin1"]["bias"]))
  m2 = np.tanh(alpha * (p["emb2"] @ p["lin2"]["kernel"] + p["lin2"]["bias"]))
  a = np.maximum(np.tanh(alpha * (m1 @ m2.T - m2 @ m1.T)), 0)
  n = a.shape[0]
  u = np.asarray(tie_break_noise(jnp.arange(n), n), np.float64)
  return a, np.argsort(-(a + noise * u), axis=1, kind="stable")[:, :k]


def test_adaptive_graph_equals_dense_mtgnn_top_k(rng):
  n, k, alpha, noise = 30, 6, 3.0, 0.01
  module = AdaptiveGraph(num_nodes=n, top_k=k, embed_dim=8, alpha=alpha, tie_noise=noise, block=7)
  params = module.init(jax.random.key(int(rng.integers(1 << 30))))
  assert "graph" not in params  # refresh = 1 (MTGNN): selection on every call, no state
  g = jax.jit(module.apply)(params)
  assert g.num_edges == n * k and g.dst_sorted
  got = np.zeros((n, n))
  np.add.at(got, (np.asarray(g.dst), np.asarray(g.src)), np.asarray(g.weight, np.float64))

  a, top = dense_mtgnn(params, alpha, noise, k)
  want = np.zeros_like(a)
  rows = np.arange(n)[:, None]
  want[rows, top] = a[rows, top]
  assert np.count_nonzero(want) > n  # the test exercises real (non-zero) selections
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_adaptive_graph_refresh_reselects_only_at_refresh_steps(rng):
  n, k, alpha, noise, refresh = 24, 4, 1.0, 0.01, 3
  module = AdaptiveGraph(
    num_nodes=n, top_k=k, embed_dim=6, alpha=alpha, tie_noise=noise, block=5, refresh=refresh
  )
  variables = module.init(jax.random.key(int(rng.integers(1 << 30))))
  params, graph = {"params": variables["params"]}, variables["graph"]
  assert set(graph) == {"src", "step"} and graph["src"].shape == (n * k,) and int(graph["step"]) == 0
  x = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)

  @jax.jit
  def train_step(params, graph):
    def loss_fn(p):
      g, state = module.apply({**p, "graph": graph}, update=True, mutable=["graph"])
      return jnp.sum(propagate(x, g) ** 2), (g, state["graph"])

    (_, (g, new_graph)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return jax.tree.map(lambda p, d: p - 0.5 * d, params, grads), new_graph, g, grads

  eval_apply = jax.jit(lambda p, graph: module.apply({**p, "graph": graph}))
  rows = np.repeat(np.arange(n), k)
  prev_src, prev_a, reselected, stale, weights_moved = None, None, 0, 0, 0
  for step in range(8):
    # Evaluation reads the stored edges (re-weighted by the current embeddings) and changes nothing.
    ge = eval_apply(params, graph)
    np.testing.assert_array_equal(np.asarray(ge.src), np.asarray(graph["src"]))
    a, top = dense_mtgnn(params, alpha, noise, k)
    new_params, graph, g, grads = train_step(params, graph)
    src, dst, w = np.asarray(g.src), np.asarray(g.dst), np.asarray(g.weight, np.float64)
    np.testing.assert_array_equal(dst, rows)
    if step % refresh == 0:  # re-selected from the embeddings of this step
      np.testing.assert_array_equal(src, top.reshape(-1))
      reselected += prev_src is not None and np.any(src != prev_src)
    else:  # kept from the last refresh step, though the embeddings moved
      np.testing.assert_array_equal(src, prev_src)
      stale += np.any(src != top.reshape(-1))  # a fresh selection would have differed
    np.testing.assert_array_equal(np.asarray(graph["src"]), src)
    assert int(graph["step"]) == step + 1
    np.testing.assert_allclose(w, a[dst, src], rtol=1e-4, atol=1e-5)  # current-embedding weights
    if prev_src is not None and np.array_equal(src, prev_src):
      # Same edges, moved embeddings: cached weights would miss the allclose above wherever the
      # reference moved by more than its tolerance; count the steps where that check had teeth.
      weights_moved += np.abs(a[dst, src] - prev_a[dst, src]).max() > 1e-3
    for name in ("emb1", "emb2"):
      assert float(jnp.abs(grads["params"][name]).sum()) > 0
    prev_src, prev_a, params = src, a, new_params
  assert reselected >= 1 and stale >= 1  # the selection really moved; keeping it is observable
  assert weights_moved >= 1  # and weights follow the embeddings between refreshes


def test_adaptive_graph_refresh_must_be_positive():
  with pytest.raises(UserError, match="graph_refresh"):
    AdaptiveGraph(num_nodes=5, top_k=2, embed_dim=3, refresh=0).init(jax.random.key(0))


def test_adaptive_graph_weights_get_gradients(rng):
  module = AdaptiveGraph(num_nodes=12, top_k=4, embed_dim=5, block=5)
  params = module.init(jax.random.key(1))
  x = jnp.asarray(rng.normal(size=(12, 3)), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(propagate(x, module.apply(p)) ** 2))(params)
  for name in ("emb1", "emb2"):
    assert float(jnp.abs(grads["params"][name]).sum()) > 0
