"""Incidence-list hypergraph ops, HGCN/HGAT and the adaptive KNN hypergraph vs float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.errors import UserError
from stjax.graph import (
  HypergraphAttention,
  HypergraphConv,
  Incidence,
  KNNHypergraph,
  dedup_hyperedges,
  edges_to_nodes,
  hypergraph_smooth,
  knn,
  nodes_to_edges,
  segment_softmax,
)


def random_incidence(rng, n, m, z, isolated=(), empty=()):
  """Random weighted incidence; `isolated` nodes and `empty` hyperedges have no entries, and a
  few entries carry weight exactly 0 (padding)."""
  nodes = rng.choice([v for v in range(n) if v not in isolated], z)
  edges = rng.choice([e for e in range(m) if e not in empty], z)
  w = rng.uniform(0.2, 1.5, z) * (rng.uniform(size=z) > 0.15)
  dense = np.zeros((n, m))
  np.add.at(dense, (nodes, edges), w)
  inc = Incidence(
    jnp.asarray(nodes, jnp.int32),
    jnp.asarray(edges, jnp.int32),
    jnp.asarray(w, jnp.float32),
    num_nodes=n,
    num_edges=m,
  )
  return inc, dense


def inv(d, p):
  out = np.zeros_like(d)
  out[d > 0] = d[d > 0] ** p
  return out


def test_incidence_products_and_smoothing_equal_dense(rng):
  n, m = 12, 7
  inc, h = random_incidence(rng, n, m, 30, isolated=(3, 9), empty=(5,))
  x = rng.normal(size=(n, 2, 4))
  f = jax.jit(lambda x, inc: (nodes_to_edges(x, inc), edges_to_nodes(x[:m], inc), hypergraph_smooth(x, inc)))
  to_e, to_n, smooth = f(jnp.asarray(x, jnp.float32), inc)
  np.testing.assert_allclose(np.asarray(to_e), np.einsum("nm,nbf->mbf", h, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(to_n), np.einsum("nm,mbf->nbf", h, x[:m]), rtol=1e-5, atol=1e-5)
  dv, de = inv(h.sum(1), -0.5), inv(h.sum(0), -1.0)
  op = dv[:, None] * h @ np.diag(de) @ h.T * dv[None, :]
  np.testing.assert_allclose(np.asarray(smooth), np.einsum("vw,wbf->vbf", op, x), rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(smooth)[[3, 9]] == 0)


def test_hgcn_equals_dense_formula(rng):
  n, m = 10, 6
  inc, h = random_incidence(rng, n, m, 25, isolated=(0,), empty=(2,))
  x = rng.normal(size=(2, n, 5, 3))  # [B, N, T, C]
  conv = HypergraphConv(features=4, node_axis=1)
  params = conv.init(jax.random.key(0), jnp.asarray(x, jnp.float32), inc)
  got = conv.apply(params, jnp.asarray(x, jnp.float32), inc)
  theta = np.asarray(params["params"]["theta"]["kernel"], np.float64)
  dv, de = inv(h.sum(1), -0.5), inv(h.sum(0), -1.0)
  op = dv[:, None] * h @ np.diag(de) @ h.T * dv[None, :]
  want = np.einsum("vw,bwtf->bvtf", op, x @ theta)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_hgat_equals_dense_reference(rng):
  n, m, slope = 9, 5, 0.2
  inc, h = random_incidence(rng, n, m, 22, isolated=(4,), empty=(1,))
  x = rng.normal(size=(2, n, 3, 3))
  layer = HypergraphAttention(features=4, node_axis=1)
  params = layer.init(jax.random.key(1), jnp.asarray(x, jnp.float32), inc)
  got = np.asarray(layer.apply(params, jnp.asarray(x, jnp.float32), inc))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  lrelu = lambda v: np.where(v > 0, v, slope * v)
  xw = x @ p["w"]["kernel"]  # [B, N, T, F]
  de = inv(h.sum(0), -1.0)
  e = lrelu(np.einsum("nm,bntf->bmtf", h, xw) * de[None, :, None, None])
  s = lrelu(
    (xw @ p["att_self"]["kernel"])[..., 0][:, :, None, :]
    + (e @ p["att_edge"]["kernel"])[..., 0][:, None, :, :]
  )  # [B, N, M, T]
  weighted = np.where(h[None, :, :, None] > 0, h[None, :, :, None] * np.exp(s), 0.0)
  denom = weighted.sum(2, keepdims=True)
  alpha = np.divide(weighted, denom, out=np.zeros_like(weighted), where=denom > 0)
  neigh = np.einsum("bnmt,bmtf->bntf", alpha, e)
  want = np.concatenate([xw, neigh], -1) @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_segment_softmax_zero_weights_and_empty_segments():
  scores = jnp.array([1.0, 2.0, 3.0, 0.5, 7.0])
  seg = jnp.array([0, 0, 0, 2, 2])
  w = jnp.array([1.0, 2.0, 0.0, 0.0, 0.0])  # segment 2 has only zero weights; segment 1 is empty
  a = np.asarray(segment_softmax(scores, seg, 3, w))
  want0 = np.array([np.e, 2 * np.e**2]) / (np.e + 2 * np.e**2)
  np.testing.assert_allclose(a[:2], want0, rtol=1e-6)
  assert np.all(a[2:] == 0)
  g = jax.grad(lambda w: segment_softmax(scores, seg, 3, w)[0])(w)
  assert np.all(np.isfinite(np.asarray(g)))


def brute_force_knn_hyperedges(z, k):
  """NumPy float64 KNN (self first), then keep the first copy of every distinct set."""
  d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
  np.fill_diagonal(d, -1.0)
  members = np.argsort(d, axis=1, kind="stable")[:, :k]
  seen, valid = set(), np.zeros(len(z), bool)
  for i, row in enumerate(members):
    key = frozenset(row.tolist())
    valid[i] = key not in seen
    seen.add(key)
  return members, valid


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_hyperedges_equal_brute_force(rng, k):
  # Clusters of near-identical points force many duplicate hyperedges.
  centres = rng.normal(size=(8, 4))
  z = centres[rng.integers(0, 8, 40)] + 0.01 * rng.normal(size=(40, 4))
  got = np.asarray(knn(jnp.asarray(z, jnp.float32), k, block=6))
  valid = np.asarray(dedup_hyperedges(jnp.asarray(got)))
  want, want_valid = brute_force_knn_hyperedges(z, k)
  np.testing.assert_array_equal(np.sort(got, 1), np.sort(want, 1))
  assert np.all(got[:, 0] == np.arange(40))
  np.testing.assert_array_equal(valid, want_valid)
  if k > 1:
    assert 0 < (~valid).sum()


def test_dedup_keeps_first_copy_of_each_set():
  members = jnp.array([[0, 1, 2], [2, 0, 1], [3, 1, 2], [1, 2, 0], [2, 3, 1], [4, 4, 4]])
  np.testing.assert_array_equal(
    np.asarray(dedup_hyperedges(members)), [True, False, True, False, False, True]
  )


def test_knn_rejects_bad_size():
  with pytest.raises(UserError, match="hyperedge_size"):
    knn(jnp.zeros((4, 2)), 5, block=2)


def test_hypergraph_rebuilds_exactly_every_refresh_steps(rng):
  n, refresh = 16, 3
  module = KNNHypergraph(num_nodes=n, hyperedge_size=3, embed_dim=4, refresh=refresh, block=5)
  variables = module.init(jax.random.key(2))
  assert int(variables["graph"]["step"]) == 0
  step = jax.jit(lambda v: module.apply(v, update=True, mutable=["graph"]))

  def current_knn(params):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    z = np.tanh(3.0 * (p["emb"] @ p["lin"]["kernel"] + p["lin"]["bias"]))
    return brute_force_knn_hyperedges(z, 3)

  rebuilt_at = []
  for t in range(7):
    # New embeddings every step, as an optimiser would produce.
    params = dict(variables["params"], emb=jnp.asarray(rng.normal(size=(n, 4)), jnp.float32))
    before = np.asarray(variables["graph"]["members"])
    _, state = step({"params": params, "graph": variables["graph"]})
    after = np.asarray(state["graph"]["members"])
    want, want_valid = current_knn(params)
    if not np.array_equal(after, before):
      rebuilt_at.append(t)
    if t % refresh == 0:
      np.testing.assert_array_equal(np.sort(after, 1), np.sort(want, 1))
      np.testing.assert_array_equal(np.asarray(state["graph"]["valid"]), want_valid)
    else:
      np.testing.assert_array_equal(after, before)
    assert int(state["graph"]["step"]) == t + 1
    variables = {"params": params, "graph": state["graph"]}
  assert rebuilt_at == [0, 3, 6]
  # Evaluation never mutates the state: applying without `update` returns the same incidence.
  inc = module.apply(variables)
  np.testing.assert_array_equal(np.asarray(inc.node).reshape(n, 3), np.asarray(variables["graph"]["members"]))


def test_membership_weights_are_differentiable(rng):
  n = 10
  module = KNNHypergraph(num_nodes=n, hyperedge_size=3, embed_dim=4, refresh=1)
  variables = module.init(jax.random.key(3))
  x = jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)
  inc = module.apply(variables)
  w = np.asarray(inc.weight).reshape(n, 3)
  valid = np.asarray(variables["graph"]["valid"])
  np.testing.assert_allclose(w[valid].sum(1), 3.0, rtol=1e-5)  # k * softmax sums to k
  assert np.all(w[~valid] == 0)

  def loss(params):
    return jnp.sum(hypergraph_smooth(x, module.apply({**variables, "params": params})) ** 2)

  grads = jax.grad(loss)(variables["params"])
  for path in (("emb",), ("lin", "kernel"), ("log_temperature",)):
    g = grads
    for key in path:
      g = g[key]
    assert float(jnp.abs(g).sum()) > 0, path
