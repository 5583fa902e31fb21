"""Official ST-LLM checkpoints: import, parity with the official code's fixtures, export, bad files.

Fixtures (`official/st_llm` in the real-data folder, STJAX_SHARED_DATA): made by running the official
PyTorch code (github ChenxiLiu-HNU/ST-LLM a318671). `small` = N 20, D 32, width 64, 2 heads, 2 blocks,
U 1.
The torch module below is our own twin of the official `ST_LLM` (same parameter names and forward
semantics); it is checked against the official output first, then used at other geometries.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stjax import metrics
from stjax.convert import hf_gpt2
from stjax.convert import official_st_llm as official
from stjax.convert.hf_common import get_path, leaf_paths
from stjax.errors import UserError
from stjax.models import build_model
from stjax.models.backbones.gpt2 import GPT2Config
from stjax.train import optim

WTE = "gpt.gpt2.wte.weight"  # requires_grad=True officially, but unused (inputs_embeds): never a gradient


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def official_dir(shared_data):
  folder = shared_data / "official" / "st_llm"
  if not (folder / "small" / "best_model.pth").is_file():
    pytest.skip(f"official ST-LLM fixtures not present at {folder}")
  return folder


@pytest.fixture(scope="module")
def small(official_dir):
  """The small fixture: imported checkpoint, model, batch, official arrays."""
  d = official_dir / "small"
  meta = json.loads((d / "meta.json").read_text())
  imported = official.load(
    d / "best_model.pth",
    n_head=meta["gpt2_config"]["n_head"],
    unfrozen_layers=meta["constructor_kwargs"]["U"],
  )
  b = np.load(d / "batch.npz")
  return {
    "dir": d,
    "meta": meta,
    "imported": imported,
    "model": build(imported),
    "batch": stjax_batch(b["x"]),
    "raw": b,
    "y": jnp.asarray(b["y"]),
    "mean": float(b["scaler_mean"]),
    "std": float(b["scaler_std"]),
  }


def build(imported):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # "pretrained is empty": the params are complete
    return build_model(imported.model_config, imported.geometry.data_spec())


def stjax_batch(x: np.ndarray) -> dict:
  """Official x (B, T, N, C) [value, tod fraction, dow, extra...] -> stjax batch (calendar of node 0)."""
  values = np.concatenate([x[..., :1], x[..., 3:]], -1)
  return {
    "x": jnp.asarray(values),
    "tod": jnp.asarray(x[:, :, 0, 1]),
    "dow": jnp.asarray(x[:, :, 0, 2].astype(np.int32)),
  }


def official_loss(model, batch, y, mean, std):
  """train.py's loss: masked MAE (true > 0) of the inverse-transformed output, raw units."""

  def loss(params):
    pred, _ = model.apply({"params": params}, batch)
    return metrics.masked_mae(pred * std + mean, y, "positive")

  return loss


def official_sets(params, mask):
  """(trainable, frozen) official key sets of a stjax trainability mask."""
  names = official.official_names(params)
  flags = {names[tuple(p)]: bool(get_path(mask, tuple(p))) for p in leaf_paths(mask)}
  assert len(flags) == len(names)
  return {k for k, f in flags.items() if f}, {k for k, f in flags.items() if not f}


def torch_twin(geometry, n_head):
  """Our torch twin of the official ST_LLM: official parameter names, order and forward."""
  import torch
  import transformers

  class Temb(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.time_day = torch.nn.Parameter(torch.randn(geometry.steps_per_day, geometry.embed_dim))
      self.time_week = torch.nn.Parameter(torch.randn(7, geometry.embed_dim))

  class Gpt(torch.nn.Module):
    def __init__(self):
      super().__init__()
      cfg = transformers.GPT2Config(
        n_layer=geometry.llm_layers,
        n_embd=geometry.n_embd,
        n_head=n_head,
        vocab_size=geometry.vocab_size,
        n_positions=geometry.n_positions,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
      )
      self.gpt2 = transformers.GPT2Model(cfg)

  class Twin(torch.nn.Module):
    def __init__(self):
      super().__init__()
      g = geometry
      self.node_emb = torch.nn.Parameter(torch.randn(g.num_nodes, g.embed_dim))
      self.Temb = Temb()
      self.start_conv = torch.nn.Conv2d(g.input_dim * g.input_len, g.embed_dim, 1)
      self.gpt = Gpt()
      self.feature_fusion = torch.nn.Conv2d(3 * g.embed_dim, g.n_embd, 1)
      self.regression_layer = torch.nn.Conv2d(g.n_embd, g.output_len, 1)

    def forward(self, x):  # x: (B, C, N, T) as train.py feeds it
      b, c, n, t = x.shape
      last = x[..., -1]  # (B, C, N): the last step's channels per node
      tod = (last[:, 1] * geometry.steps_per_day).long()
      e_t = (self.Temb.time_day[tod] + self.Temb.time_week[last[:, 2].long()]).transpose(1, 2)[..., None]
      e_s = self.node_emb.T[None, :, :, None].expand(b, -1, -1, -1)
      e_p = self.start_conv(
        x.transpose(1, 2).reshape(b, n, c * t).transpose(1, 2)[..., None]
      )  # feature c*T+t
      h = self.feature_fusion(torch.cat([e_p, e_t, e_s], 1))[..., 0].transpose(1, 2)  # (B, N, d)
      h = self.gpt.gpt2(inputs_embeds=h).last_hidden_state
      return self.regression_layer(h.transpose(1, 2)[..., None])  # (B, T_out, N, 1)

  return Twin()


def state_numpy(module) -> dict:
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# Import and parity


def test_geometry_and_config(small):
  imported, meta = small["imported"], small["meta"]
  kw, g = meta["constructor_kwargs"], imported.geometry
  assert (g.num_nodes, g.input_len, g.output_len, g.input_dim) == (
    kw["num_nodes"],
    kw["input_len"],
    kw["output_len"],
    kw["input_dim"],
  )
  assert (g.embed_dim, g.n_embd, g.llm_layers, g.steps_per_day) == (
    kw["gpt_channel"],
    kw["to_gpt_channel"],
    kw["llm_layer"],
    meta["tod_table_size"],
  )
  mc = imported.model_config
  gpt = meta["gpt2_config"]
  assert (mc.n_embd, mc.n_head, mc.llm_layers, mc.vocab_size, mc.n_positions, mc.embed_dim) == (
    gpt["n_embd"],
    gpt["n_head"],
    gpt["n_layer"],
    gpt["vocab_size"],
    gpt["n_positions"],
    kw["gpt_channel"],
  )
  assert (mc.unfrozen_layers, mc.trainable, mc.causal, mc.pretrained) == (
    kw["U"],
    f"pfa({kw['U']})",
    True,
    "",
  )
  assert (mc.dropout, mc.attention_dropout) == (gpt["resid_pdrop"], gpt["attn_pdrop"])
  assert (
    sum(int(np.size(get_path(imported.params, tuple(p)))) for p in leaf_paths(imported.params))
    == meta["param_num"]
  )
  g.check_spec(g.data_spec())
  with pytest.raises(UserError, match="num_nodes is 21"):
    g.check_spec(official.Geometry(**{**g.__dict__, "num_nodes": 21}).data_spec())
  # import_st_llm is the same import; without n_head a non-GPT-2 width is refused (n_head is not stored).
  mc2, params2 = official.import_st_llm(small["dir"] / "best_model.pth", n_head=2, unfrozen_layers=1)
  assert mc2 == mc and jax.tree.all(jax.tree.map(np.array_equal, params2, imported.params))
  with pytest.raises(UserError, match="n_head: not stored"):
    official.import_st_llm(small["dir"] / "best_model.pth")


def test_forward_and_metrics_match_official(small):
  out = np.load(small["dir"] / "output.npz")
  pred, _ = jax.jit(lambda p, b: small["model"].apply({"params": p}, b))(
    small["imported"].params, small["batch"]
  )
  diff = float(np.abs(np.asarray(pred) - out["output"]).max())
  print(f"official ST-LLM small: max |output diff| = {diff:.2e}")
  assert diff <= 1e-5
  # Official metrics: util.py over all masked entries at once (pooled), MAPE/WAPE as fractions.
  m = metrics.Metrics("positive", range(1, 13), ("value",), average="pooled")
  m.update(pred * small["std"] + small["mean"], small["y"])
  got = m.compute()
  want = {
    "mae": out["masked_mae"],
    "rmse": out["masked_rmse"],
    "mape": 100 * out["masked_mape"],
    "wape": 100 * out["masked_wmape"],
  }
  rel = {k: abs(got[k] - float(v)) / abs(float(v)) for k, v in want.items()}
  print("metric relative diffs:", {k: f"{v:.1e}" for k, v in rel.items()})
  assert max(rel.values()) <= 1e-5


def test_first_step_gradients_match_official(small):
  imported = small["imported"]
  params, mc = imported.params, imported.model_config
  loss = official_loss(small["model"], small["batch"], small["y"], small["mean"], small["std"])
  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert float(value) == pytest.approx(small["meta"]["ranger_fixture"]["losses"][0], rel=1e-6)
  trainable, _ = official_sets(params, optim.trainable_mask(params, mc.trainable))
  want = np.load(small["dir"] / "grads_step1.npz")
  assert set(want.files) == trainable  # the official parameters with a gradient = stjax's trainable set
  got = official.to_official(grads)
  worst = max(float(np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()) for k in want.files)
  print(f"first-step gradients: worst max|diff|/max|grad| = {worst:.2e}")
  assert worst <= 1e-4


def test_pfa_mask_is_the_official_freeze_list(small):
  params, meta = small["imported"].params, small["meta"]
  trainable, frozen = official_sets(
    params, optim.trainable_mask(params, small["imported"].model_config.trainable)
  )
  # wte: requires_grad=True in the official model but never gets a gradient (inputs_embeds), so
  # Ranger skips it (p.grad is None): frozen in effect, and stjax freezes it explicitly.
  assert frozen == set(meta["frozen_requires_grad_false"]) | {WTE}
  assert trainable == set(meta["trainable_requires_grad_true"]) - {WTE}
  ranger = np.load(small["dir"] / "ranger_7steps.npz")
  assert WTE not in np.load(small["dir"] / "grads_step1.npz").files
  np.testing.assert_array_equal(ranger[WTE], np.load(small["dir"] / "state_dict.npz")[WTE])


def test_pfa_mask_at_the_real_geometry(official_dir):
  """freeze_list_llm6_U2.json: GPT-2 small cut to 6 blocks, U=2, N=266 (vocab 64 as the list's model)."""
  listed = json.loads((official_dir / "freeze_list_llm6_U2.json").read_text())
  g = official.Geometry(
    num_nodes=266,
    input_len=12,
    output_len=12,
    input_dim=3,
    steps_per_day=48,
    embed_dim=256,
    n_embd=768,
    llm_layers=6,
    vocab_size=64,
    n_positions=1024,
  )
  mc = official.model_config(g, unfrozen_layers=2)
  assert (mc.n_head, mc.trainable) == (12, "pfa(2)")
  model = build(official.Imported(mc, {}, g))
  spec = g.data_spec()
  batch = {"x": jnp.zeros((1, 12, 266, 1)), "tod": jnp.zeros((1, 12)), "dow": jnp.zeros((1, 12), jnp.int32)}
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))["params"]
  import flax.linen as nn

  shapes = nn.meta.unbox(shapes)
  assert official.geometry_of_params(shapes) == g and spec.num_nodes == 266
  for e in official.name_table(g):  # every official shape is the stjax leaf's, through the name map
    assert tuple(get_path(shapes, e.path).shape) == official.stjax_shape(e), e.official
  trainable, frozen = official_sets(shapes, optim.trainable_mask(shapes, mc.trainable))
  assert frozen == set(listed["frozen"]) | {WTE}
  assert trainable == set(listed["trainable"]) - {WTE}
  assert len(listed["frozen"]) == 40


def test_ranger_seven_steps_match_official(small):
  """7 official Ranger steps (eval mode): stjax's ranger (optim.make_optimizer) on the same batch."""
  imported, fixture = small["imported"], small["meta"]["ranger_fixture"]
  params = imported.params
  cfg = optim.default_optim_config()
  cfg.update(
    name="ranger",
    learning_rate=1e-3,
    b1=0.95,
    b2=0.999,
    eps=1e-5,
    weight_decay=1e-4,
    grad_clip_norm=5.0,
    radam_threshold=5.0,
    lookahead_sync_period=6,
    lookahead_slow_step=0.5,
  )
  tx, _ = optim.make_optimizer(cfg, params, optim.trainable_mask(params, imported.model_config.trainable))
  loss = official_loss(small["model"], small["batch"], small["y"], small["mean"], small["std"])

  @jax.jit
  def step(p, state):
    value, grads = jax.value_and_grad(loss)(p)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, value

  state, losses = tx.init(params), []
  for _ in range(7):
    params, state, value = step(params, state)
    losses.append(float(value))
  np.testing.assert_allclose(losses, fixture["losses"], rtol=2e-6)
  want, start = np.load(small["dir"] / "ranger_7steps.npz"), np.load(small["dir"] / "state_dict.npz")
  got = official.to_official(params)
  abs_diff = max(float(np.abs(got[k] - want[k]).max()) for k in start.files)
  moved = [k for k in start.files if np.any(want[k] != start[k])]
  rel_change = max(float(np.abs(got[k] - want[k]).max() / np.abs(want[k] - start[k]).max()) for k in moved)
  print(f"Ranger 7 steps: max |param diff| = {abs_diff:.2e}, worst diff / max change = {rel_change:.2e}")
  for k in start.files:
    if k in moved:
      np.testing.assert_allclose(got[k], want[k], rtol=2e-6, atol=2e-7, err_msg=k)  # a few float32 ulps
    else:
      np.testing.assert_array_equal(got[k], start[k], err_msg=k)  # frozen (and wte) never move


# ----------------------------------------------------------------------------------------------
# Export


def test_export_round_trip_is_bit_exact(small, tmp_path):
  want = np.load(small["dir"] / "state_dict.npz")
  back = official.to_official(small["imported"].params)
  assert list(back) == list(want.files)  # same keys, official order
  for k in want.files:
    assert back[k].dtype == want[k].dtype and back[k].shape == want[k].shape, k
    np.testing.assert_array_equal(back[k], want[k], err_msg=k)
  torch = pytest.importorskip("torch")
  path = official.write_official(back, tmp_path / "best_model.pth")
  assert sorted(os.listdir(tmp_path)) == ["best_model.pth"]  # no temp folder left
  loaded = torch.load(path, weights_only=True)
  original = torch.load(small["dir"] / "best_model.pth", weights_only=True)
  assert list(loaded) == list(original)
  assert all(torch.equal(loaded[k], original[k]) for k in original)
  again = official.load(path, n_head=2, unfrozen_layers=1)
  assert jax.tree.all(jax.tree.map(np.array_equal, again.params, small["imported"].params))


def test_torch_twin_loads_the_export_and_reproduces_the_official_output(small, tmp_path):
  torch = pytest.importorskip("torch")
  path = official.export_st_llm(small["imported"].params, tmp_path / "exported.pth")
  twin = torch_twin(small["imported"].geometry, n_head=2).eval()
  twin.load_state_dict(torch.load(path, weights_only=True), strict=True)
  with torch.no_grad():
    out = twin(torch.from_numpy(small["raw"]["model_input"])).numpy()
  np.testing.assert_allclose(out, np.load(small["dir"] / "output.npz")["output"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("input_dim", [3, 4])
def test_any_geometry_matches_the_torch_twin(rng, input_dim):
  """Another geometry (and one extra input channel): import, forward parity, bit-exact round trip."""
  torch = pytest.importorskip("torch")
  g = official.Geometry(
    num_nodes=7,
    input_len=5,
    output_len=3,
    input_dim=input_dim,
    steps_per_day=24,
    embed_dim=8,
    n_embd=32,
    llm_layers=3,
    vocab_size=11,
    n_positions=9,
  )
  torch.manual_seed(0)
  twin = torch_twin(g, n_head=4).eval()
  with torch.no_grad():
    for p in twin.parameters():
      p.add_(0.05 * torch.randn_like(p))
  state = state_numpy(twin)
  imported = official.from_official(state, n_head=4, unfrozen_layers=2, input_dim=input_dim)
  assert imported.geometry == g
  b = 3
  tod_idx = rng.integers(0, 24, (b, 1)) + np.arange(g.input_len)[None]
  x = np.concatenate(
    [
      rng.normal(size=(b, g.input_len, g.num_nodes, 1)),
      np.broadcast_to(((tod_idx % 24) / 24)[:, :, None, None], (b, g.input_len, g.num_nodes, 1)),
      np.broadcast_to(rng.integers(0, 7, (b, 1, 1, 1)), (b, g.input_len, g.num_nodes, 1)),
      rng.normal(size=(b, g.input_len, g.num_nodes, input_dim - 3)),
    ],
    -1,
  ).astype(np.float32)
  with torch.no_grad():
    want = twin(torch.from_numpy(x).transpose(1, 3)).numpy()
  pred, _ = build(imported).apply({"params": imported.params}, stjax_batch(x))
  np.testing.assert_allclose(np.asarray(pred), want, rtol=1e-5, atol=1e-5)
  back = official.to_official(imported.params, input_dim=input_dim)
  assert list(back) == list(state)
  assert all(np.array_equal(back[k], state[k]) for k in state)


# ----------------------------------------------------------------------------------------------
# Bad checkpoints and bad params: one UserError line each, nothing written


def test_truncated_file(small, tmp_path):
  data = (small["dir"] / "best_model.pth").read_bytes()
  for cut in (len(data) // 2, len(data) - 10, 100):
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(UserError, match="truncated or corrupt"):
      official.import_st_llm(path, n_head=2)


def test_storage_shorter_than_its_tensor(small, tmp_path):
  """A well-formed zip whose tensor storage was cut: refused before any out-of-bounds view."""
  path = tmp_path / "short.pth"
  with zipfile.ZipFile(small["dir"] / "best_model.pth") as src, zipfile.ZipFile(path, "w") as dst:
    for name in src.namelist():
      raw = src.read(name)
      dst.writestr(name, raw[:8] if name.endswith("/data/0") else raw)
  with pytest.raises(UserError, match="holds 8 bytes, but the pickle says 640"):
    official.import_st_llm(path, n_head=2)


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_pickle_with_code_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"node_emb": _Exploit(marker)}, protocol=2)
  zipped = tmp_path / "evil.pth"
  with zipfile.ZipFile(zipped, "w") as z:
    z.writestr("evil/data.pkl", payload)
    z.writestr("evil/version", "3\n")
  with pytest.raises(UserError, match=r"refusing to unpickle (posix|nt|os)\.system"):
    official.import_st_llm(zipped)
  plain = tmp_path / "evil_plain.pth"
  plain.write_bytes(payload)
  with pytest.raises(UserError, match="refused"):
    official.import_st_llm(plain)
  assert not marker.exists()


def _tiny_state(rng) -> dict:
  g = official.Geometry(
    num_nodes=4,
    input_len=2,
    output_len=2,
    input_dim=3,
    steps_per_day=6,
    embed_dim=4,
    n_embd=8,
    llm_layers=1,
    vocab_size=5,
    n_positions=6,
  )
  return {e.official: rng.normal(size=e.shape).astype(np.float32) for e in official.name_table(g)}


def test_missing_unexpected_and_misshaped_tensors(rng):
  state = _tiny_state(rng)
  kw = {"n_head": 2}
  assert official.from_official(state, **kw).geometry.n_embd == 8
  assert official.from_official({"module." + k: v for k, v in state.items()}, **kw).geometry.num_nodes == 4
  old_buffers = {**state, "gpt.gpt2.h.0.attn.bias": np.ones((1, 1, 6, 6), np.float32)}
  assert official.from_official(old_buffers, **kw).geometry.llm_layers == 1
  cases = [
    (
      {k: v for k, v in state.items() if k != "regression_layer.bias"},
      "missing tensor regression_layer.bias",
    ),
    (
      {k: v for k, v in state.items() if k != "gpt.gpt2.h.0.ln_2.weight"},
      "missing tensor gpt.gpt2.h.0.ln_2.weight",
    ),
    (
      {**state, "gpt.gpt2.h.0.attn.extra": np.zeros(3, np.float32)},
      "unexpected tensor gpt.gpt2.h.0.attn.extra",
    ),
    (
      {**state, "Temb.time_week": np.zeros((8, 4), np.float32)},
      r"Temb.time_week has shape \(8, 4\).*\(7, 4\)",
    ),
    (
      {**state, "feature_fusion.weight": np.zeros((8, 9, 1, 1), np.float32)},
      "feature_fusion.weight has shape",
    ),
    ({**state, "start_conv.weight": np.zeros((4, 7, 1, 1), np.float32)}, "not a multiple of input_dim=3"),
    ({**state, "node_emb": np.zeros((7, 4), np.float32)}, "7 nodes .* exceed the 6 GPT-2 positions"),
    ({**state, "gpt.gpt2.h.2.ln_1.weight": np.zeros(8, np.float32)}, r"blocks \[0, 2\]"),
    ({**state, "node_emb": np.zeros((4, 4), np.int64)}, "dtype int64"),
    ({k: v for k, v in state.items() if k != "node_emb"}, "missing tensor node_emb"),
  ]
  for bad, message in cases:
    with pytest.raises(UserError, match=message):
      official.from_official(bad, **kw)
  with pytest.raises(UserError, match="n_head: 3 does not divide"):
    official.from_official(state, n_head=3)
  with pytest.raises(UserError, match="unfrozen_layers: 2 not in 0..1"):
    official.from_official(state, n_head=2, unfrozen_layers=2)


def test_gpt2_checkpoint_given_as_st_llm(tmp_path, rng):
  from safetensors.numpy import save_file

  cfg = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=5, n_positions=6)
  gpt2 = {hf: rng.normal(size=r.shape(cfg)).astype(np.float32) for hf, _, r in hf_gpt2.rules(cfg)}
  save_file(gpt2, str(tmp_path / "model.safetensors"))
  with pytest.raises(UserError, match=r"GPT-2 \(Hugging Face\) checkpoint, not an official ST-LLM"):
    official.import_st_llm(tmp_path / "model.safetensors")
  with pytest.raises(UserError, match="GPT-2 .* checkpoint"):
    official.from_official({"transformer." + k: v for k, v in gpt2.items()})
  (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf()))
  with pytest.raises(UserError, match="found a folder .*Hugging Face model folder"):
    official.import_st_llm(tmp_path)
  with pytest.raises(UserError, match="not an official ST-LLM state dict"):
    official.from_official({"encoder.weight": np.zeros(3, np.float32)})
  with pytest.raises(UserError, match="no such file"):
    official.import_st_llm(tmp_path / "nope.pth")
  (tmp_path / "notes.pth").write_text("hello")
  with pytest.raises(UserError, match="not a torch checkpoint"):
    official.import_st_llm(tmp_path / "notes.pth")
  (tmp_path / "empty.pth").write_bytes(b"")
  with pytest.raises(UserError, match="empty file"):
    official.import_st_llm(tmp_path / "empty.pth")
  with pytest.raises(UserError, match="empty state dict"):
    official.from_official({})


def test_export_refuses_unmapped_params(rng, tmp_path):
  params = official.from_official(_tiny_state(rng), n_head=2).params
  lora = jax.tree.map(lambda a: a, params)
  lora["llm"]["h_0"]["attn"]["c_attn"]["lora_a"] = np.zeros((8, 2), np.float32)
  with pytest.raises(UserError, match="llm/h_0/attn/c_attn/lora_a has no official ST-LLM key"):
    official.to_official(lora)
  missing = jax.tree.map(lambda a: a, params)
  del missing["feature_fusion"]["bias"]
  with pytest.raises(UserError, match="missing feature_fusion/bias"):
    official.to_official(missing)
  with pytest.raises(UserError, match="no such folder"):
    official.export_st_llm(params, tmp_path / "absent" / "x.pth")
  assert not (tmp_path / "absent").exists()
