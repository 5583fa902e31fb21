"""Streaming masked metrics and losses against a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.errors import UserError
from stjax.metrics import Metrics, format_table, masked_mae, metric_sums, mse

RULES = {
  "zero": lambda t: t != 0,
  "positive": lambda t: t > 0,
  "gt5": lambda t: t > 5,
  "none": lambda t: np.ones(t.shape, bool),
}


def reference(pred, true, valid, rule):
  """float64 per-horizon / per-channel metrics: dict of [H, C] arrays plus pooled-over-channel rows."""
  p, t = pred.astype(np.float64), true.astype(np.float64)
  m = RULES[rule](t) & valid[:, None, None, None]
  out = {}
  for name, sel in (("hc", None), ("h", "pool")):
    rows = []
    for h in range(t.shape[1]):
      cols = [slice(None)] if sel else [slice(c, c + 1) for c in range(t.shape[3])]
      row = []
      for c in cols:
        mm = m[:, h, :, c]
        e, tt = (p[:, h, :, c] - t[:, h, :, c])[mm], t[:, h, :, c][mm]
        nz = tt != 0
        row.append(
          {
            "mae": np.abs(e).mean(),
            "rmse": np.sqrt((e**2).mean()),
            "mape": 100 * np.mean(np.abs(e[nz]) / np.abs(tt[nz])),
            "wape": 100 * np.abs(e).sum() / np.abs(tt).sum(),
          }
        )
      rows.append(row)
    out[name] = rows
  pooled_m = m
  e, tt = (p - t)[pooled_m], t[pooled_m]
  nz = tt != 0
  out["pooled"] = {
    "mae": np.abs(e).mean(),
    "rmse": np.sqrt((e**2).mean()),
    "mape": 100 * np.mean(np.abs(e[nz]) / np.abs(tt[nz])),
    "wape": 100 * np.abs(e).sum() / np.abs(tt).sum(),
  }
  return out


def random_batch(rng, b=37, h=4, n=9, c=2):
  true = rng.gamma(2.0, 6.0, size=(b, h, n, c)).astype(np.float32)
  true[rng.random(true.shape) < 0.15] = 0.0  # missing readings
  true[rng.random(true.shape) < 0.05] *= -1.0  # negatives (excluded by positive / gt5)
  pred = (true + rng.normal(0, 3, size=true.shape)).astype(np.float32)
  valid = rng.random(b) < 0.85
  return pred, true, valid


@pytest.mark.parametrize("rule", list(RULES))
def test_streaming_matches_float64_reference(rng, rule):
  pred, true, valid = random_batch(rng)
  ref = reference(pred, true, valid, rule)
  streamed = Metrics(rule, horizons=[1, 2, 3, 4], channel_names=["in", "out"])
  for lo, hi in [(0, 5), (5, 10), (10, 37)]:  # uneven batches
    streamed.update(pred[lo:hi], true[lo:hi], valid[lo:hi])
  one_shot = Metrics(rule, [1, 2, 3, 4], ["in", "out"])
  one_shot.update(pred, true, valid)
  for average in ("horizon_mean", "pooled"):
    m = Metrics(rule, [1, 2, 3, 4], ["in", "out"], average)
    m.sums = streamed.sums
    r = m.compute()
    check(r, one_shot.compute() if average == "horizon_mean" else None, ref, average)


def check(r, one_shot, ref, average):
  for k in ("mae", "rmse", "mape", "wape"):
    if one_shot is not None:
      np.testing.assert_allclose(r[k], one_shot[k], rtol=1e-6)
    for i, row in enumerate(r["per_horizon"]):
      assert row["horizon"] == i + 1
      np.testing.assert_allclose(row[k], ref["h"][i][0][k], rtol=2e-5)
    for c, name in enumerate(["in", "out"]):
      for i, row in enumerate(r["per_channel"][name]["per_horizon"]):
        np.testing.assert_allclose(row[k], ref["hc"][i][c][k], rtol=2e-5)
    want = np.mean([ref["h"][i][0][k] for i in range(4)]) if average == "horizon_mean" else ref["pooled"][k]
    np.testing.assert_allclose(r[k], want, rtol=2e-5)


def test_gt5_counts_only_targets_above_five_per_channel():
  true = np.array([[[[4.0, 6.0], [5.0, 10.0]]]], np.float32)  # [1, 1, 2 nodes, 2 channels]
  pred = np.array([[[[0.0, 7.0], [0.0, 13.0]]]], np.float32)
  m = Metrics("gt5", [1], ["inflow", "outflow"], "pooled")
  m.update(pred, true)
  r = m.compute()
  assert np.isnan(r["per_channel"]["inflow"]["mae"])  # 4 and 5 are not > 5
  assert r["per_channel"]["outflow"]["mae"] == pytest.approx(2.0)
  assert r["per_channel"]["outflow"]["mape"] == pytest.approx(100 * (1 / 6 + 3 / 10) / 2)
  assert r["mae"] == pytest.approx(2.0)


def test_masked_mae_and_mse_losses(rng):
  pred, true, valid = random_batch(rng)
  for rule, keep in RULES.items():
    m = keep(true) & valid[:, None, None, None]
    want = np.abs(pred.astype(np.float64) - true)[m].mean()
    got = jax.jit(masked_mae, static_argnums=2)(
      jnp.asarray(pred), jnp.asarray(true), rule, jnp.asarray(valid)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(masked_mae(pred, true, "zero"), np.abs(pred - true)[true != 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(mse(pred, true, valid), ((pred - true) ** 2)[valid].mean(), rtol=1e-5)
  assert float(masked_mae(pred, np.zeros_like(true), "zero")) == 0.0  # nothing kept: 0, not NaN
  g = jax.grad(lambda p: masked_mae(p, true, "zero"))(jnp.asarray(pred))
  assert np.all(np.asarray(g)[true == 0] == 0)


def test_sums_inside_jit_and_add(rng):
  pred, true, valid = random_batch(rng)
  step = jax.jit(lambda p, t, v: metric_sums(p, t, v, null_rule="positive"))
  a = Metrics("positive", [1, 2, 3, 4], ["a", "b"])
  a.add(step(pred, true, valid))
  b = Metrics("positive", [1, 2, 3, 4], ["a", "b"])
  b.update(pred, true, valid)
  assert a.compute() == b.compute()


def test_table_and_errors(rng):
  pred, true, valid = random_batch(rng, c=1)
  m = Metrics("zero", [1, 2, 3, 4], ["speed"])
  m.update(pred, true, valid)
  r = m.compute()
  assert "per_channel" not in r
  table = format_table(r, horizons=(2, 4), title="t")
  lines = table.splitlines()
  assert lines[2] == "| horizon | MAE | RMSE | MAPE % | WAPE % |"
  assert [ln.split("|")[1].strip() for ln in lines[4:]] == ["2", "4", "average"]
  assert f"{r['mae']:.4f}" in lines[-1]
  with pytest.raises(UserError, match="null rule"):
    Metrics("nonzero", [1], ["a"])
