"""Official STH-SepNet checkpoints: import, parity with the official code's outputs part by part,
the released variant's random HGAT, the prompt, the run folder the CLI writes (stjax.predict and
stjax.evaluate on it) and bad files.

Fixtures (official/sth_sepnet in the real-data folder, STJAX_SHARED_DATA; README there): the official PyTorch code (github
jiawenchen10/ST-SepNet e1b4a02) run in eval mode on CPU in float32 with a tiny random GPT-2
(width 64, 2 heads, 2 blocks): N 20, 48 -> 48, d_model 32, d_ff 16, 8 reprogramming heads, the
default spatial stream (3 layers, 32/32/64/128 channels, k = 3 hyperedges, gamma 0.5).
Every comparison below is float32 against float32; 1e-5 is a few float32 ulps at the outputs'
scale (|y| <~ 2): the same maths in a different summation order, never a different formula.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from stjax import predict
from stjax.convert import __main__ as convert_cli
from stjax.convert import official_sth_sepnet as official
from stjax.convert import official_sth_sepnet_prompt as prompt_lib
from stjax.convert.official_sth_sepnet_table import head_rows, name_table
from stjax.data import run_data
from stjax.errors import UserError
from stjax.graph import AdaptiveGraph, EdgeList, MixProp, blockwise_top_k
from stjax.models import build_model
from stjax.models.sth_sepnet.fusion import ReleasedGate
from stjax.models.sth_sepnet.released import ReleasedHypergraph, hgat_collection
from stjax.train import run_convert, run_folder

TOL = 1e-5
HGAT_NAMES = {"w_self": "W_self", "w_neigh": "W_neigh", "w_concat": "W_concat", "attention": "attention"}


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def fx(shared_data):
  """The official fixture folder's arrays, and both imports (GNN-only and full)."""
  d = shared_data / "official" / "sth_sepnet"
  if not (d / "checkpoint").is_file():
    pytest.skip(f"official STH-SepNet fixtures not present at {d}")
  meta = json.loads((d / "meta.json").read_text())
  bounds = {"min_values": meta["configs"]["min_values"], "max_values": meta["configs"]["max_values"]}
  names = ("batch", "temporal", "spatial_gnn_only", "spatial_hypergraph", "fusion")
  npz = {name: np.load(d / f"{name}.npz") for name in names}
  full = official.load(d / "checkpoint", n_head=meta["gpt2"]["config"]["n_head"], **bounds)
  gnn = official.load(d / "checkpoint", n_head=2, hypergraph=False, **bounds)
  inputs = {
    "x": jnp.asarray(npz["batch"]["x_enc"])[..., None],
    "prompt_ids": jnp.asarray(npz["temporal"]["prompt_ids"]),
  }
  return {"dir": d, "meta": meta, "bounds": bounds, "full": full, "gnn": gnn, "inputs": inputs, **npz}


def build(imported):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # "pretrained is empty": the params are complete
    return build_model(imported.model_config, imported.geometry.data_spec())


def run(imported, batch, extra=None, **kwargs):
  """(pred [B, T, N], intermediates) of an imported model."""
  variables = {"params": imported.params, **imported.model_state, **(extra or {})}
  (pred, _), state = build(imported).apply(variables, batch, capture_intermediates=True, **kwargs)
  return np.asarray(pred)[..., 0], state["intermediates"]


def recorded_hgat(h, with_mask: bool) -> dict:
  layers = []
  for i in range(3):
    layer = {ours: h[f"hgat{i}_{theirs}"] for ours, theirs in HGAT_NAMES.items()}
    if with_mask:
      layer["keep"] = h[f"hgat{i}_mask"]
    layers.append(layer)
  return hgat_collection(layers)


def maxdiff(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max())


def dense(graph: EdgeList) -> np.ndarray:
  a = np.zeros((graph.num_nodes, graph.num_nodes))
  np.add.at(a, (np.asarray(graph.dst), np.asarray(graph.src)), np.asarray(graph.weight))
  return a


def hyperedge_sets(incidence) -> set[frozenset]:
  """Nonzero columns of a dense [N, M] incidence, or of an `Incidence`, as sets of nodes."""
  if hasattr(incidence, "edge"):
    members = {}
    for v, e, w in zip(np.asarray(incidence.node), np.asarray(incidence.edge), np.asarray(incidence.weight)):
      if w:
        members.setdefault(int(e), set()).add(int(v))
    return {frozenset(m) for m in members.values()}
  return {frozenset(np.flatnonzero(col).tolist()) for col in np.asarray(incidence).T if col.any()}


# ----------------------------------------------------------------------------------------------
# Import


def test_geometry_config_and_every_tensor_has_one_place(fx):
  g, mc, cfg = fx["full"].geometry, fx["full"].model_config, fx["meta"]["configs"]
  assert (g.num_nodes, g.seq_len, g.d_model, g.d_ff, g.n_heads, g.patch_len, g.stride) == (
    cfg["node_num"],
    cfg["seq_len"],
    cfg["d_model"],
    cfg["d_ff"],
    cfg["n_heads"],
    cfg["patch_len"],
    cfg["stride"],
  )
  assert (g.n_embd, g.llm_layers, g.vocab_size, g.num_prototypes) == (
    cfg["llm_dim"],
    cfg["llm_layers"],
    512,
    1000,
  )
  assert (g.num_layers, g.residual_channels, g.conv_channels, g.skip_channels, g.end_channels) == (
    3,
    32,
    32,
    64,
    128,
  )
  assert (g.node_dim, g.mixprop_depth, g.hyperedge_size) == (40, 2, cfg["scale_hyperedges"])
  assert (mc.spatial_variant, mc.fusion, mc.lora_rank, mc.graph_refresh, mc.use_hypergraph) == (
    "released",
    "released",
    0,
    1,
    True,
  )
  # stjax side: the imported tree is exactly the model's param tree (no leaf left at its init).
  for imported in (fx["full"], fx["gnn"]):
    init = jax.eval_shape(lambda m=build(imported): m.init(jax.random.key(0), fx["inputs"]))
    want = jax.tree.map(lambda s: s.shape, nn.unbox(init["params"]))
    got = jax.tree.map(np.shape, imported.params)
    assert got == want
    assert set(init) == {"params", "bounds"}
  # official side: every checkpoint key is mapped or ignored with a reason.
  state = official.read_state_dict(fx["dir"] / "checkpoint")
  table = {e.official for e in name_table(fx["full"].geometry)}
  reasons = {k: official.ignored_reason(k, True) for k in state if k not in table}
  assert all(reasons.values()) and len(table) + len(reasons) == len(state) == len(
    fx["meta"]["state_dict_shapes"]
  )
  assert float(fx["full"].params["spatial"]["gamma"]) == pytest.approx(
    float(np.asarray(state["sthgnn.gamma"]))
  )
  assert any("HGAT" in n for n in fx["full"].notes) and not any("HGAT" in n for n in fx["gnn"].notes)
  # import_sth_sepnet is the same import; a non-GPT-2 width needs n_head (not stored).
  mc2, params2, state2 = official.import_sth_sepnet(fx["dir"] / "checkpoint", n_head=2, **fx["bounds"])
  assert mc2 == mc and jax.tree.all(jax.tree.map(np.array_equal, params2, fx["full"].params))
  assert jax.tree.all(jax.tree.map(np.array_equal, state2, fx["full"].model_state))
  with pytest.raises(UserError, match="n_head: not stored"):
    official.import_sth_sepnet(fx["dir"] / "checkpoint")


def test_head_rows_is_the_flatten_order():
  """FlattenHead flattens (d_ff, P) feature-major; stjax flattens (P, d_ff) patch-major."""
  d_ff, p = 3, 4
  feats = np.arange(p * d_ff).reshape(p, d_ff)  # stjax [P, d_ff]
  official_flat = feats.T.reshape(-1)  # official [d_ff, P] flattened
  np.testing.assert_array_equal(official_flat[head_rows(d_ff, p)], feats.reshape(-1))


# ----------------------------------------------------------------------------------------------
# Parity, part by part


def test_temporal_branch_matches_official(fx):
  t = fx["temporal"]
  _, inter = run(fx["gnn"], fx["inputs"])
  tmp = inter["temporal"]
  diffs = {
    "source_embeddings": maxdiff(np.asarray(tmp["prototypes"]["__call__"][0]).T, t["source_embeddings"]),
    "patch_embedding_out": maxdiff(tmp["patch_embedding"]["__call__"][0], t["patch_embedding_out"]),
    "reprogramming_out": maxdiff(tmp["reprogramming"]["__call__"][0], t["reprogramming_out"]),
    "llm_last_hidden_state": maxdiff(inter["llm"]["__call__"][0], t["llm_last_hidden_state"]),
    "temporal_out": maxdiff(np.asarray(tmp["__call__"][0])[:, :, 0], t["temporal_out"]),
  }
  no_prompt = {"x": fx["inputs"]["x"]}
  _, inter = run(fx["gnn"], no_prompt)
  diffs["temporal_out_noprompt"] = maxdiff(
    np.asarray(inter["temporal"]["__call__"][0])[:, :, 0], t["temporal_out_noprompt"]
  )
  print("temporal max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL
  assert maxdiff(t["temporal_out"], t["temporal_out_noprompt"]) > 100 * TOL  # the prompt matters


def test_adaptive_graph_and_mixprop_match_official(fx):
  s, p = fx["spatial_gnn_only"], fx["gnn"].params["spatial"]
  graph = AdaptiveGraph(20, 20, 40, 3.0, refresh=1).apply({"params": p["adaptive_graph"]})
  adj = dense(graph)
  diffs = {"adaptive_adj": maxdiff(adj, s["adaptive_adj"])}
  assert maxdiff(s["mixprop2_layer0_adj"], s["mixprop1_layer0_adj"].T) == 0
  x = jnp.asarray(np.transpose(s["mixprop1_layer0_x"], (0, 2, 3, 1)))  # (B, C, N, T) -> [B, N, T, C]
  for name, adj_key, out_key in (
    ("mixprop_0", "mixprop1_layer0_adj", "mixprop1_layer0_out"),
    ("mixprop_t_0", "mixprop2_layer0_adj", "mixprop2_layer0_out"),
  ):
    a = s[adj_key]
    dst, src = np.nonzero(np.ones_like(a))  # every entry, zeros included, as the dense official A
    edges = EdgeList(jnp.asarray(src, jnp.int32), jnp.asarray(dst, jnp.int32), jnp.asarray(a[dst, src]), 20)
    out = MixProp(32, 2, 0.05, node_axis=1).apply({"params": p[name]}, x, edges)
    diffs[name] = maxdiff(np.transpose(np.asarray(out), (0, 3, 1, 2)), s[out_key])
  print("graph max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL


def test_hypergraph_incidence_matches_official(fx):
  h = fx["spatial_hypergraph"]
  inc = ReleasedHypergraph(20, 3, 40).apply({"params": fx["full"].params["spatial"]["hypergraph"]})
  want = {frozenset(e) for e in fx["meta"]["hyperedges"]}
  assert hyperedge_sets(h["incidence"]) == want and len(want) == h["incidence"].shape[1] == 17
  assert hyperedge_sets(inc) == want
  assert np.asarray(inc.weight).sum() == 3 * len(want)  # duplicates carry weight 0


def test_graphs_at_50_nodes_where_topk_decides(fx):
  """N = 50 > top_k: the official top-k depends on its per-call noise. With that noise replayed,
  stjax's selection gives the official adjacency exactly; with stjax's fixed noise, every row the
  official noise cannot flip is the same."""
  z = np.load(fx["dir"] / "graphs_n50.npz")
  info = json.loads((fx["dir"] / "graphs_n50.json").read_text())
  gc = {
    "emb1": z["gc.emb1.weight"],
    "emb2": z["gc.emb2.weight"],
    "lin1": {"kernel": z["gc.lin1.weight"].T, "bias": z["gc.lin1.bias"]},
    "lin2": {"kernel": z["gc.lin2.weight"].T, "bias": z["gc.lin2.bias"]},
  }
  full = dense(AdaptiveGraph(50, 50, 40, 3.0, refresh=1).apply({"params": gc}))  # top-50 of 50: all scores
  assert maxdiff(full, z["full_adj_before_topk"]) <= TOL
  noisy = jnp.asarray(z["full_adj_before_topk"] + 0.01 * z["topk_noise_seed100"])
  _, kept = blockwise_top_k(lambda r: noisy[r], 50, 20, 16)
  mask = np.zeros((50, 50))
  np.put_along_axis(mask, np.asarray(kept), 1.0, axis=1)
  assert maxdiff(full * mask, z["adj"]) <= TOL
  ours = dense(AdaptiveGraph(50, 20, 40, 3.0, refresh=1).apply({"params": gc}))
  stable = [r for r in range(50) if r not in set(info["rows_differing_across_seeds"])]
  assert maxdiff(ours[stable], z["adj"][stable]) <= TOL
  hgc = {"emb": z["hgc.emb1.weight"], "lin": {"kernel": z["hgc.lin1.weight"].T, "bias": z["hgc.lin1.bias"]}}
  inc = ReleasedHypergraph(50, 3, 40).apply({"params": hgc})
  assert hyperedge_sets(inc) == hyperedge_sets(z["incidence"]) == {frozenset(e) for e in info["hyperedges"]}


def test_fusion_gate_matches_official(fx):
  f = fx["fusion"]
  y_t, y_s = (jnp.asarray(f[k])[..., None] for k in ("temporal_expanded", "spatial"))
  params = fx["full"].params["fusion"]
  fused = ReleasedGate().apply(
    {"params": params, "bounds": fx["full"].model_state["bounds"]["fusion"]}, y_t, y_s
  )
  fused = np.asarray(fused)[..., 0]
  no_clamp = {"lower": np.full((20, 1), -np.inf), "upper": np.full((20, 1), np.inf)}  # what init gives
  free = np.asarray(ReleasedGate().apply({"params": params, "bounds": no_clamp}, y_t, y_s))[..., 0]
  np.testing.assert_array_equal(f["min_values"], np.asarray(fx["bounds"]["min_values"], np.float32))
  diffs = {"fused_before_clamp": maxdiff(free, f["fused_before_clamp"]), "fused": maxdiff(fused, f["fused"])}
  print("fusion max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL
  assert int(np.sum(free != fused)) == fx["meta"]["fused_entries_clamped"] == 273


def test_gnn_only_output_matches_official(fx):
  pred, inter = run(fx["gnn"], fx["inputs"])
  s = fx["spatial_gnn_only"]
  want = np.load(fx["dir"] / "output_gnn_only.npz")["output"]
  diffs = {
    "sthgnn_out": maxdiff(np.asarray(inter["spatial"]["__call__"][0][0]), s["sthgnn_out"]),
    "output": maxdiff(pred, want),
  }
  print("GNN-only max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL
  pred2, _ = run(fx["gnn"], fx["inputs"])
  np.testing.assert_array_equal(pred, pred2)  # deterministic, as the official GNN-only path


def test_full_output_with_recorded_hgat_matches_official(fx):
  """The official HGAT's per-call random weights and dropout mask replayed (they are in no
  checkpoint): without its dropout the deterministic official output, with the recorded mask
  the official seeded forward itself (torch.manual_seed(1234))."""
  h = fx["spatial_hypergraph"]
  diffs = {}
  for with_mask, out_file, spatial_key in (
    (False, "output_hgat_replay_nodropout", "sthgnn_out_hgat_nodropout"),
    (True, "output_full_seed1234", "sthgnn_out_seed1234"),
  ):
    pred, inter = run(fx["full"], fx["inputs"], {"hgat": recorded_hgat(h, with_mask)})
    diffs[out_file] = maxdiff(pred, np.load(fx["dir"] / f"{out_file}.npz")["output"])
    diffs[spatial_key] = maxdiff(np.asarray(inter["spatial"]["__call__"][0][0]), h[spatial_key])
    if with_mask:
      for i in range(3):
        got = np.transpose(np.asarray(inter["spatial"][f"hypergraph_conv_{i}"]["__call__"][0]), (0, 3, 1, 2))
        diffs[f"hgat{i}_out"] = maxdiff(got, h[f"hgat{i}_out"])
  print("full (recorded HGAT) max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL


def test_hgat_without_recorded_weights_is_random_like_the_official(fx):
  model, batch = build(fx["full"]), fx["inputs"]
  variables = {"params": fx["full"].params, **fx["full"].model_state}
  apply = jax.jit(lambda key: model.apply(variables, batch, rngs={"dropout": key})[0])
  a, b, a2 = apply(jax.random.key(1)), apply(jax.random.key(2)), apply(jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
  official_spread = fx["meta"]["determinism"]["max_abs_diff_between_seeds_1234_4321"]
  spread = maxdiff(a, b)
  print(f"two HGAT draws: max |diff| {spread:.1e} (official seeds 1234 vs 4321: {official_spread:.1e})")
  assert 0.1 * official_spread < spread < 10 * official_spread
  fixed = [np.asarray(model.apply(variables, batch)[0]) for _ in range(2)]  # no rng: one fixed draw
  np.testing.assert_array_equal(*fixed)
  with pytest.raises(UserError, match=r"w_concat has shape \(2, 2\)"):
    bad = recorded_hgat(fx["spatial_hypergraph"], False)
    bad["spatial"]["hypergraph_conv_1"]["w_concat"] = jnp.zeros((2, 2))
    model.apply({**variables, "hgat": bad}, batch)


def test_released_variant_trains_like_the_released_code(fx):
  """One training step of the imported full model: gamma and the adaptive graph learn; the
  hypergraph's embeddings get exactly zero gradient (the released H comes from detached NumPy)."""
  model, imported = build(fx["full"]), fx["full"]
  y = jnp.asarray(fx["batch"]["batch_y"])[:, -48:, :, None]  # [y[:label_len] ; y[-pred_len:]]

  def loss(params):
    (pred, _), state = model.apply(
      {"params": params, **imported.model_state},
      fx["inputs"],
      train=True,
      rngs={"dropout": jax.random.key(0)},
      mutable=["bounds"],
    )
    return jnp.mean((pred - y) ** 2), state

  (value, state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(imported.params)
  g = grads["spatial"]
  assert np.isfinite(float(value)) and float(jnp.abs(g["gamma"])) > 0
  assert float(jnp.abs(g["adaptive_graph"]["emb1"]).max()) > 0
  assert (
    float(jnp.abs(g["hypergraph"]["emb"]).max())
    == 0
    == float(jnp.abs(g["hypergraph"]["lin"]["kernel"]).max())
  )
  assert jax.tree.all(jax.tree.map(np.array_equal, state["bounds"], imported.model_state["bounds"]))


# ----------------------------------------------------------------------------------------------
# The prompt


def test_prompt_builder_and_tokenizer(fx):
  b, t, meta = fx["batch"], fx["temporal"], fx["meta"]
  official_prompts = meta["prompts"]
  # The tokenizer path is exact: the official strings give the official ids.
  np.testing.assert_array_equal(prompt_lib.tokenize(official_prompts, fx["dir"] / "hf_gpt2"), t["prompt_ids"])
  # With the statistics computed by the released torch ops, the strings are the official ones.
  marks = (b["x_enc"], b["x_mark_enc"], b["x_mark_dec"])
  assert prompt_lib.official_prompts(*marks, data="METR", backend="torch") == official_prompts
  # NumPy statistics: the same text; the numbers may differ in their last float32 bits, because
  # torch sums the N = 20 values in another order (bound: 20 eps relative; measured: 2 ulps).
  ours = prompt_lib.official_prompts(*marks, data="METR")
  number = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")
  for mine, theirs in zip(ours, official_prompts):
    assert number.sub("#", mine) == number.sub("#", theirs)  # text, lags and timestamps identical
    for x, y in zip(number.findall(mine), number.findall(theirs)):
      assert abs(float(x) - float(y)) <= 20 * np.finfo(np.float32).eps * abs(float(y))
  # ...which changes a few prompt tokens, and the forecast (this random tiny GPT-2 reads them).
  ids = prompt_lib.tokenize(ours, fx["dir"] / "hf_gpt2")
  _, inter = run(fx["gnn"], {"x": fx["inputs"]["x"], "prompt_ids": jnp.asarray(ids)})
  diff = maxdiff(np.asarray(inter["temporal"]["__call__"][0])[:, :, 0], t["temporal_out"])
  print(f"temporal_out with NumPy-statistics prompts: max |diff| {diff:.1e}")
  assert diff <= 2e-2


# ----------------------------------------------------------------------------------------------
# CLI: `import-sth-sepnet` writes a run folder; stjax.evaluate / stjax.predict read it

MEAN = 50.0 + np.arange(20)  # a per-node scaler for the fixture batch (already scaled)
STD = 10.0 + 0.5 * np.arange(20)
SCALER_FLAGS = ["--scaler-mean=" + ",".join(map(str, MEAN)), "--scaler-std=" + ",".join(map(str, STD))]


def import_argv(fx, out, *extra) -> list[str]:
  return [
    "import-sth-sepnet",
    f"--checkpoint={fx['dir'] / 'checkpoint'}",
    f"--output={out}",
    "--n-head=2",
    *extra,
  ]


def write_windows(path, x, y, mean, std) -> None:
  """Scaled x, y [B, T, N] -> an stjax.predict/evaluate windows file in original units (5-minute
  steps, a time-of-day and a day-of-week channel)."""
  b, t, n = x.shape
  pos = np.arange(t)[None] + 100 * np.arange(b)[:, None] + 288 * 6  # crosses a week boundary
  calendar = [np.broadcast_to(c[..., None], (b, t, n)) for c in ((pos % 288) / 288, (pos // 288) % 7)]
  np.savez(
    path, x=np.stack([x * std + mean, *calendar], -1).astype(np.float32), y=(y * std + mean)[..., None]
  )


def write_series(path, values) -> None:
  """A node-column CSV with a date column, 5-minute steps."""
  stamps = np.datetime64("2024-01-01T00:00") + np.arange(len(values)) * np.timedelta64(5, "m")
  rows = [
    f"{t}," + ",".join(format(float(v), ".9g") for v in row) for t, row in zip(stamps.astype(str), values)
  ]
  path.write_text("\n".join(["date," + ",".join(f"n{i}" for i in range(values.shape[1]))] + rows) + "\n")


def cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def gnn_run(fx, tmp_path_factory):
  """The fixture checkpoint imported GNN-only with a given per-node scaler and the fixture's clamp."""
  root = tmp_path_factory.mktemp("sepnet_run")
  (root / "bounds.json").write_text(json.dumps(fx["bounds"]))
  argv = import_argv(fx, root / "run", "--gnn-only", f"--bounds={root / 'bounds.json'}", *SCALER_FLAGS)
  r = cli("stjax.convert", *argv)
  assert r.returncode == 0, r.stderr[-2000:]
  write_windows(root / "windows.npz", fx["batch"]["x_enc"], fx["batch"]["batch_y"][:, -48:], MEAN, STD)
  return {"run": root / "run", "windows": root / "windows.npz", "printed": r.stdout}


def test_import_writes_a_run_folder(fx, gnn_run):
  run = run_data.load(gnn_run["run"])
  assert (run.protocol.name, run.protocol.input_len, run.protocol.output_len, run.num_nodes) == (
    "sthsepnet",
    48,
    48,
    20,
  )
  np.testing.assert_array_equal(run.scaler.mean[:, 0], MEAN.astype(np.float32))
  np.testing.assert_array_equal(run.scaler.std[:, 0], STD.astype(np.float32))
  assert (run.step_minutes, run.adjacency, run.channels) == (5.0, None, ("value",))
  config = json.loads((gnn_run["run"] / "config.json").read_text())
  assert (config["model"]["spatial_variant"], config["model"]["fusion"]) == ("released", "released")
  assert config["model"]["use_hypergraph"] is False and config["data"]["protocol"] == "sthsepnet"
  meta = json.loads((gnn_run["run"] / "imported.json").read_text())
  assert meta["hypergraph"] is False and meta["clamp"] == "given (--bounds)" and len(meta["sha256"]) == 64
  assert meta["geometry"] == dataclasses.asdict(fx["gnn"].geometry)
  printed = gnn_run["printed"]
  assert "GNN-only" in printed and "feed no prompt" in printed and "wrote run folder" in printed


def test_predict_and_evaluate_cli_give_the_official_prompt_free_output(fx, gnn_run, tmp_path):
  """stjax.predict on the run folder = the converted model's own output = the official parts
  composed (the official prompt-free temporal output and GNN-only spatial output, through the
  fusion gate checked above): the CLI path feeds no prompt, so these are the outputs it can match."""
  out = tmp_path / "pred.npz"
  argv = ["--workdir", str(gnn_run["run"]), "--windows", str(gnn_run["windows"]), "--output", str(out)]
  assert predict.main(argv) == 0
  got = (np.load(out)["prediction"][..., 0] - MEAN) / STD  # back to scaled units
  direct, _ = run(fx["gnn"], {"x": fx["inputs"]["x"]})
  t, s = fx["temporal"]["temporal_out_noprompt"], fx["spatial_gnn_only"]["sthgnn_out"]
  official_parts = ReleasedGate().apply(
    {"params": fx["gnn"].params["fusion"], "bounds": fx["gnn"].model_state["bounds"]["fusion"]},
    jnp.broadcast_to(jnp.asarray(t)[:, :, None], s.shape),
    jnp.asarray(s),
  )
  diffs = {"direct": maxdiff(got, direct), "official parts": maxdiff(got, np.asarray(official_parts)[..., 0])}
  print("stjax.predict (scaled) max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})
  assert max(diffs.values()) <= TOL
  r = cli("stjax.evaluate", f"--workdir={gnn_run['run']}", f"--windows={gnn_run['windows']}")
  assert r.returncode == 0, r.stderr[-2000:]
  average = re.search(r"^\| average \| ([\d.]+) \| ([\d.]+) \|", r.stdout, re.M)
  y = np.load(gnn_run["windows"])["y"][..., 0]
  pred = np.load(out)["prediction"][..., 0]
  mae, rmse = np.abs(pred - y).mean(), np.sqrt(((pred - y) ** 2).mean())  # sthsepnet: pooled, unmasked
  assert abs(float(average[1]) - mae) <= 1e-4 and abs(float(average[2]) - rmse) <= 1e-4, r.stdout


def test_import_with_data_fits_scaler_and_clamp_on_the_train_rows(fx, tmp_path, rng):
  """--data: the per-node scaler and the output clamp come from the first 70 % of the rows (the
  released TSLib loader's train part); the full model (HGAT) forecasts with one fixed draw."""
  values = rng.normal(50.0, 10.0, (600, 20)) + np.arange(20)
  write_series(tmp_path / "series.csv", values)
  out = tmp_path / "run"
  assert convert_cli.main(import_argv(fx, out, f"--data={tmp_path / 'series.csv'}")) == 0
  train = values[:420]  # int(0.7 * 600) rows, as the released loader
  mean, std = train.mean(0), train.std(0)
  loaded = run_folder.load_run(out, need_data=False)
  np.testing.assert_allclose(loaded.run.scaler.mean[:, 0], mean, rtol=1e-6)
  np.testing.assert_allclose(loaded.run.scaler.std[:, 0], std, rtol=1e-6)
  assert np.abs(loaded.run.scaler.mean[:, 0] - values.mean(0)).max() > 1e-2  # not fitted on val/test
  bounds = jax.device_get(loaded.state.model_state["bounds"]["fusion"])
  scaled = (train - mean) / std
  np.testing.assert_allclose(bounds["lower"][:, 0], scaled.min(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bounds["upper"][:, 0], scaled.max(0), rtol=1e-5, atol=1e-6)
  m32, s32 = loaded.run.scaler.mean[:, 0], loaded.run.scaler.std[:, 0]
  write_windows(tmp_path / "w.npz", fx["batch"]["x_enc"], fx["batch"]["batch_y"][:, -48:], m32, s32)
  assert (
    predict.main(
      ["--workdir", str(out), "--windows", str(tmp_path / "w.npz"), "--output", str(tmp_path / "p.npz")]
    )
    == 0
  )
  got = (np.load(tmp_path / "p.npz")["prediction"][..., 0] - m32) / s32
  imported = official.with_bounds(fx["full"], bounds["lower"][:, 0], bounds["upper"][:, 0])
  direct, _ = run(imported, {"x": fx["inputs"]["x"]})  # no rng: the fixed HGAT draw
  print(f"full model (fixed HGAT draw) via stjax.predict: max |diff| {maxdiff(got, direct):.1e}")
  assert maxdiff(got, direct) <= TOL


def test_scaler_flag_values_from_text_or_files(tmp_path):
  np.save(tmp_path / "m.npy", MEAN)
  (tmp_path / "m.json").write_text(json.dumps(list(MEAN)))
  (tmp_path / "m.txt").write_text("\n".join(map(str, MEAN)))
  assert run_convert.parse_values("1.5", "--scaler-mean") == [1.5]
  assert run_convert.parse_values(",".join(map(str, MEAN)), "--scaler-mean") == list(MEAN)
  for name in ("m.npy", "m.json", "m.txt"):
    assert run_convert.parse_values(str(tmp_path / name), "--scaler-mean") == list(MEAN), name
  (tmp_path / "bad.txt").write_text("1 2 x")
  with pytest.raises(UserError, match="bad.txt: expected numbers"):
    run_convert.parse_values(str(tmp_path / "bad.txt"), "--scaler-mean")


def test_import_bad_inputs_are_one_line_exit_2_and_write_nothing(fx, shared_data, tmp_path, capsys):
  (tmp_path / "cut").write_bytes((fx["dir"] / "checkpoint").read_bytes()[:100_000])
  write_series(tmp_path / "n21.csv", np.full((600, 21), 5.0) + np.arange(600)[:, None] % 7)
  (tmp_path / "bad.json").write_text("[1, 2]")
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "file").write_text("x")
  one = ["--scaler-mean=0", "--scaler-std=1"]
  cases = [
    ([], "give the scaler, or the data"),
    ([*one, f"--data={tmp_path / 'n21.csv'}"], "give the scaler, or the data"),
    (["--scaler-mean=0"], "give both"),
    (["--scaler-mean=1,2,3", "--scaler-std=1"], r"--scaler-mean: 3 values; give one, or one per node \(20\)"),
    (["--scaler-mean=0", "--scaler-std=0"], "--scaler-std: values must be finite and > 0"),
    (["--scaler-mean=nope", "--scaler-std=1"], "--scaler-mean: 'nope' is neither numbers"),
    ([*one, "--step-minutes=7"], "7 minutes does not divide a day"),
    ([f"--data={tmp_path / 'n21.csv'}", "--step-minutes=5"], "--step-minutes: only with"),
    ([f"--data={tmp_path / 'n21.csv'}"], "num_nodes is 21 but the official checkpoint was trained with 20"),
    ([*one, f"--bounds={tmp_path / 'bad.json'}"], "expected JSON"),
    ([*one, "--bounds=" + str(tmp_path / "nope.json")], "expected JSON"),
  ]
  cut = ["import-sth-sepnet", f"--checkpoint={tmp_path / 'cut'}", f"--output={tmp_path / 'out'}", *one]
  st_llm = shared_data / "official" / "st_llm" / "small" / "best_model.pth"
  checks = [(import_argv(fx, tmp_path / "out", *args), message) for args, message in cases]
  checks.append((cut, "truncated or corrupt"))
  if st_llm.is_file():
    checks.append(
      ([*cut[:1], f"--checkpoint={st_llm}", *cut[2:]], "official ST-LLM checkpoint .*not STH-SepNet")
    )
  checks.append((import_argv(fx, tmp_path / "taken", *one), "output exists and is not an empty folder"))
  before = set(os.listdir(tmp_path))
  for argv, message in checks:
    with pytest.raises(SystemExit) as e:
      convert_cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and re.search(message, err), (argv, err)
    assert set(os.listdir(tmp_path)) == before, argv  # no output folder, no temporary left behind
  assert os.listdir(tmp_path / "taken") == ["file"]


# ----------------------------------------------------------------------------------------------
# Bad checkpoints: one UserError line each


def test_truncated_checkpoint(fx, tmp_path):
  data = (fx["dir"] / "checkpoint").read_bytes()
  for cut in (len(data) // 2, len(data) - 10, 100):
    path = tmp_path / "cut"
    path.write_bytes(data[:cut])
    with pytest.raises(UserError, match="truncated or corrupt") as e:
      official.import_sth_sepnet(path, n_head=2)
    assert "\n" not in str(e.value)


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_pickle_with_code_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"gate_linear.weight": _Exploit(marker)}, protocol=2)
  zipped = tmp_path / "checkpoint"
  with zipfile.ZipFile(zipped, "w") as z:
    z.writestr("checkpoint/data.pkl", payload)
    z.writestr("checkpoint/version", "3\n")
  with pytest.raises(UserError, match=r"refusing to unpickle (posix|nt|os)\.system"):
    official.import_sth_sepnet(zipped)
  raw = tmp_path / "plain"
  raw.write_bytes(payload)
  with pytest.raises(UserError, match="refused"):
    official.import_sth_sepnet(raw)
  assert not marker.exists()


def test_bf16_checkpoint_is_upcast(fx, tmp_path, state):
  """The released runs train under DeepSpeed bf16: a bf16 state dict imports as its float32 values."""
  import ml_dtypes
  import torch

  path = tmp_path / "checkpoint"
  torch.save({k: torch.from_numpy(np.array(v)).to(torch.bfloat16) for k, v in state.items()}, path)
  imported = official.load(path, n_head=2)
  rounded = jax.tree.map(lambda a: np.asarray(a, ml_dtypes.bfloat16).astype(np.float32), fx["full"].params)
  assert jax.tree.all(jax.tree.map(np.array_equal, imported.params, rounded))
  assert imported.params["spatial"]["gamma"].dtype == np.float32


@pytest.fixture(scope="module")
def state(fx):
  return official.read_state_dict(fx["dir"] / "checkpoint")


def test_wrong_geometry_and_bad_tensors(state):
  kw = {"n_head": 2}
  wte = state["llm_model.wte.weight"]
  cases = [
    (
      {**state, "gate_linear.weight": np.zeros((21, 40), np.float32)},
      r"gate_linear.weight has shape \(21, 40\)",
    ),
    (
      {**state, "sthgnn.norm.1.weight": np.zeros((32, 20, 35), np.float32)},
      r"sthgnn.norm.1.weight has shape \(32, 20, 35\)",
    ),
    (
      {**state, "output_projection.linear.weight": np.zeros((48, 97), np.float32)},
      "not d_ff x 6 patches of stride 8",
    ),
    (
      {**state, "sthgnn.end_conv_2.weight": np.zeros((12, 128, 1, 1), np.float32)},
      "needs pred_len = seq_len = 48",
    ),
    ({**state, "sthgnn.start_conv.weight": np.zeros((32, 2, 1, 1), np.float32)}, "one input channel"),
    ({k: v for k, v in state.items() if k != "sthgnn.skipE.bias"}, "missing tensor sthgnn.skipE.bias"),
    (
      {k: v for k, v in state.items() if k != "llm_model.h.1.ln_2.weight"},
      "missing tensor llm_model.h.1.ln_2.weight",
    ),
    ({**state, "sthgnn.extra.weight": np.zeros(3, np.float32)}, "unexpected tensor sthgnn.extra.weight"),
    ({**state, "llm_model.h.3.ln_1.weight": np.zeros(64, np.float32)}, r"GPT-2 blocks \[0, 1, 3\]"),
    ({**state, "gate_linear.bias": np.zeros(20, np.int64)}, "gate_linear.bias has dtype int64"),
    ({**state, "word_embeddings": wte + 1}, "word_embeddings differs from llm_model.wte.weight"),
    ({**state, "llm_model.embeddings.word_embeddings.weight": wte}, "its LLM is BERT"),
    ({}, "empty state dict"),
  ]
  for bad, message in cases:
    with pytest.raises(UserError, match=message) as e:
      official.from_official(bad, **kw)
    assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="pass the run's stride"):
    official.from_official(state, stride=5, **kw)
  with pytest.raises(UserError, match="min_values: expected 20 finite"):
    official.from_official(state, min_values=[0.0] * 19, **kw)
  assert official.from_official({"module." + k: v for k, v in state.items()}, **kw).geometry.seq_len == 48


def test_st_llm_and_other_files_given_as_sth_sepnet(fx, shared_data, tmp_path, state):
  st_llm = shared_data / "official" / "st_llm" / "small" / "best_model.pth"
  if st_llm.is_file():
    with pytest.raises(UserError, match="official ST-LLM checkpoint .*not STH-SepNet"):
      official.import_sth_sepnet(st_llm)
  with pytest.raises(UserError, match="official ST-LLM checkpoint"):
    official.from_official(
      {"node_emb": np.zeros((4, 4), np.float32), "gpt.gpt2.wte.weight": np.zeros((5, 8), np.float32)}
    )
  gpt2 = {k[len("llm_model.") :]: v for k, v in state.items() if k.startswith("llm_model.")}
  with pytest.raises(UserError, match=r"GPT-2 \(Hugging Face\) checkpoint"):
    official.from_official(gpt2)
  with pytest.raises(UserError, match="not an official STH-SepNet state dict"):
    official.from_official({"encoder.weight": np.zeros(3, np.float32)})
  with pytest.raises(UserError, match="found a folder"):
    official.import_sth_sepnet(fx["dir"] / "hf_gpt2")
  with pytest.raises(UserError, match="not a torch checkpoint"):
    official.import_sth_sepnet(fx["dir"] / "hf_gpt2" / "model.safetensors")
  with pytest.raises(UserError, match="no such file"):
    official.import_sth_sepnet(tmp_path / "nope")
  (tmp_path / "empty").write_bytes(b"")
  with pytest.raises(UserError, match="empty file"):
    official.import_sth_sepnet(tmp_path / "empty")
