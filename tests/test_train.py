"""Whole train-and-evaluate runs on tiny configs (8 simulated CPU devices, data-parallel mesh).

A tiny per-node MLP forecaster with a `memory` state collection is registered as model "tiny" so
these tests exercise the trainer alone; the real models have their own tests and configs.
"""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stjax import evaluate, sharding
from stjax.data.windows import build_data, default_data_config
from stjax.errors import UserError
from stjax.models import registry
from stjax.train import checkpoint, loop, optim
from stjax.train import config as train_config
from stjax.train import step as step_lib


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"name": "tiny", "hidden": 32})


class Tiny(nn.Module):
  hidden: int
  out_len: int
  out_ch: int

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x = batch["x"]  # [B, T, N, C]
    b, t, n, c = x.shape
    h = x.transpose(0, 2, 1, 3).reshape(b, n, t * c)
    tod = jnp.broadcast_to(batch["tod"][:, None, -1:], (b, n, 1)).astype(h.dtype)
    h = jnp.concatenate([h, jnp.sin(2 * jnp.pi * tod), jnp.cos(2 * jnp.pi * tod)], -1)
    h = nn.gelu(nn.Dense(self.hidden)(h))
    h = nn.Dropout(0.1, deterministic=not train)(h)
    usage = self.variable("memory", "usage", jnp.zeros, (self.hidden,), jnp.float32)
    if train:
      usage.value = 0.9 * usage.value + 0.1 * jax.lax.stop_gradient(h.mean((0, 1))).astype(jnp.float32)
    out = nn.Dense(self.out_len * self.out_ch)(h).reshape(b, n, self.out_len, self.out_ch)
    return out.transpose(0, 2, 1, 3), {"aux_loss": jnp.float32(0)}


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
  monkeypatch.setitem(registry._MODULES, "tiny", __name__)
  monkeypatch.setitem(
    registry._BUILDERS,
    "tiny",
    lambda cfg, spec, kernels, pretrained: Tiny(cfg.hidden, spec.output_len, spec.out_channels),
  )


def tiny_config(**train) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.overwrite = False
  c.data = default_data_config()
  c.data.synthetic.num_nodes = 6
  c.data.synthetic.num_steps = 1152  # 4 days of 5-minute steps
  c.model = default_config()
  c.optim = optim.default_optim_config()
  c.optim.learning_rate = 3e-3
  c.train = train_config.default_train_config()
  c.train.batch_size = 64
  c.train.num_epochs = 3
  c.train.log_every_steps = 4
  c.train.progress_bar = False
  c.train.plot_nodes = 2
  c.train.update(train)
  c.mesh = sharding.default_mesh_config()
  return c


def _lines(path):
  return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_train_and_evaluate_writes_everything_and_reproduces(tmp_path):
  cfg = tiny_config()
  res = loop.train_and_evaluate(cfg, str(tmp_path))
  for name in (
    "config.json",
    "metrics.jsonl",
    "results.json",
    "results.md",
    "predictions.png",
    "training_curves.png",
  ):
    assert (tmp_path / name).stat().st_size > 0, name
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved) >= {
    "test",
    "val",
    "baselines",
    "steps",
    "wall_time_s",
    "params_total",
    "params_trainable",
  }
  assert set(saved["test"]) >= {"mae", "rmse", "mape", "wape", "per_horizon"}
  assert len(saved["test"]["per_horizon"]) == 12
  assert set(saved["baselines"]) == {"last_value", "historical_average"}
  assert saved["params_total"] == saved["params_trainable"] > 0
  records = _lines(tmp_path / "metrics.jsonl")
  assert all({"step", "train_loss"} <= set(r) for r in records)
  assert records[-1]["step"] == saved["steps"] and saved["steps"] % 3 == 0
  assert sum("val_mae" in r for r in records) == 3  # one validation per epoch
  # Training learned something (beating the baselines is the quickstart's job, not this tiny run's).
  val = [r["val_mae"] for r in records if "val_mae" in r]
  assert val[-1] < val[0] and saved["val"]["mae"] == min(val)
  assert res["test"]["mae"] == saved["test"]["mae"]
  # Re-evaluating the best checkpoint reproduces results.json exactly.
  for split in ("test", "val"):
    assert evaluate.compare(saved[split], evaluate.evaluate_workdir(tmp_path, split), split) == []
  # stjax.predict: raw history in original units -> the same forecasts as the evaluation path.
  from stjax.predict import Forecaster

  f = Forecaster.from_workdir(tmp_path)  # the model and stored scaler alone, no data
  bundle = build_data(cfg.data)
  src, ds = bundle.splits["test"], bundle.dataset
  t = int(src.times[7])
  span = slice(t - f.history_len + 1, t + 1)
  got = f.predict(ds.values[span], time_of_day=ds.time_of_day[span], day_of_week=ds.day_of_week[span])
  window = {k: v for k, v in src.batch([7]).items() if k in ("x", "tod", "dow")}
  want = jax.jit(step_lib.make_predict_fn(f.experiment.model, bundle.target_scaler))(f.state, window)
  assert got.shape == (12, 6, 1)
  np.testing.assert_allclose(got, np.asarray(want)[0], rtol=1e-5, atol=1e-5)
  with pytest.raises(UserError, match="history"):
    f.predict(ds.values[span][:5], time_of_day=ds.time_of_day[span][:5], day_of_week=ds.day_of_week[span][:5])
  # Running the finished command again resumes at the end: nothing retrains, same results.
  again = loop.train_and_evaluate(tiny_config(), str(tmp_path))
  assert again["test"] == saved["test"]


def test_resume_after_interrupt_is_exact(tmp_path, monkeypatch):
  cfg = tiny_config(checkpoint_every_steps=5, num_epochs=2)
  full = loop.train_and_evaluate(cfg, str(tmp_path / "full"))

  real = step_lib.jit_train_step

  def dies_after(n):
    def jit_train_step(*args, **kwargs):
      step, calls = real(*args, **kwargs), {"n": 0}

      def wrapped(state, batch):
        calls["n"] += 1
        if calls["n"] > n:
          raise KeyboardInterrupt  # killed between checkpoints
        return step(state, batch)

      return wrapped

    return jit_train_step

  monkeypatch.setattr(step_lib, "jit_train_step", dies_after(17))  # last checkpoint: step 15
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(tiny_config(checkpoint_every_steps=5, num_epochs=2), str(tmp_path / "cut"))
  assert checkpoint.Checkpoints(tmp_path / "cut").latest_step() == 15
  monkeypatch.setattr(step_lib, "jit_train_step", real)
  resumed = loop.train_and_evaluate(
    tiny_config(checkpoint_every_steps=5, num_epochs=2), str(tmp_path / "cut")
  )
  assert resumed["test"] == full["test"] and resumed["val"] == full["val"]  # bit-for-bit
  assert resumed["best_step"] == full["best_step"] and resumed["steps"] == full["steps"]
  a, b = _lines(tmp_path / "full" / "metrics.jsonl"), _lines(tmp_path / "cut" / "metrics.jsonl")
  assert [r["step"] for r in a] == [r["step"] for r in b]
  assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, monkeypatch):
  real = loop.evaluate_split
  scripted = iter([5.0, 4.0, 4.5, 4.2, 4.1, 3.0])  # best at the 2nd validation, patience 3

  def evaluate_split(exp, state, split, *args, **kwargs):
    metrics, trace = real(exp, state, split, *args, **kwargs)
    if split == "val" and kwargs.get("keep_nodes") is None and args:  # the loop's validations
      metrics = {**metrics, "mae": next(scripted)}
    return metrics, trace

  monkeypatch.setattr(loop, "evaluate_split", evaluate_split)
  res = loop.train_and_evaluate(tiny_config(eval_every_steps=3, patience=3, num_epochs=10), str(tmp_path))
  assert res["steps"] == 15 and res["best_step"] == 6  # stopped after 3 validations without gain
  ck = checkpoint.Checkpoints(tmp_path)
  assert ck.best_step() == 6 and ck.latest_step() == 15
  assert [r.get("val_mae") for r in _lines(tmp_path / "metrics.jsonl") if "val_mae" in r] == [
    5.0,
    4.0,
    4.5,
    4.2,
    4.1,
  ]


def test_diverging_loss_stops_with_one_line_and_keeps_last_checkpoint(tmp_path):
  cfg = tiny_config(checkpoint_every_steps=1)
  cfg.optim.learning_rate = 1e30
  with pytest.raises(UserError, match=r"^training diverged: loss is (nan|inf) at step \d+") as e:
    loop.train_and_evaluate(cfg, str(tmp_path))
  assert "\n" not in str(e.value)
  ck = checkpoint.Checkpoints(tmp_path)
  intact = ck.latest_step()  # what the message names is really there, and no other
  named = str(e.value).split("newest intact checkpoint is step ")[1].split(" ")[0] if intact else None
  assert named == (str(intact) if intact else None)
  assert "no intact checkpoint exists" in str(e.value) or intact is not None
  records = _lines(tmp_path / "metrics.jsonl")
  assert all(np.isfinite(r["train_loss"]) for r in records)


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda c: c.train.__setattr__("nonsense", 1), r"config\.train: unknown field\(s\) nonsense"),
    (lambda c: c.model.__setattr__("name", "gpt5"), r"config\.model\.name: unknown model 'gpt5'"),
    (
      lambda c: c.update(
        {"data": {**c.data.to_dict(), "name": "metr-la", "path": "/nonexistent/metr-la.h5"}}
      ),
      r"/nonexistent/metr-la\.h5",
    ),
  ],
)
def test_bad_config_is_one_clear_line(tmp_path, edit, message):
  cfg = tiny_config()
  edit(cfg)
  with pytest.raises(UserError, match=message) as e:
    loop.train_and_evaluate(cfg, str(tmp_path))
  assert "\n" not in str(e.value)


def test_cli_errors_are_one_line(tmp_path):
  cfg_file = tmp_path / "cfg.py"
  cfg_file.write_text(
    "from stjax import sharding\n"
    "from stjax.train import optim\n"
    "from stjax.train.config import default_train_config\n"
    "from stjax.data.windows import default_data_config\n"
    "import ml_collections\n"
    "def get_config():\n"
    "  return ml_collections.ConfigDict({'seed': 0, 'overwrite': False, 'data': default_data_config(),\n"
    "      'model': {'name': 'gpt5'}, 'optim': optim.default_optim_config(),\n"
    "      'train': default_train_config(), 'mesh': sharding.default_mesh_config()})\n"
  )
  run = lambda *a: subprocess.run(
    [sys.executable, "-m", "stjax.train", f"--config={cfg_file}", *a],
    capture_output=True,
    text=True,
    timeout=300,
  )
  r = run("--config.train.nonsense=3", f"--workdir={tmp_path / 'w'}")  # refused by the locked config
  assert r.returncode != 0 and "nonsense" in r.stderr and "Traceback" not in r.stderr
  r = run(f"--workdir={tmp_path / 'w'}")
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
    "stjax: error: config.model.name: unknown model 'gpt5'; "
    "known: " + ", ".join(registry.model_names()).replace(", tiny", "")
  )
  assert not (tmp_path / "w").exists()  # nothing written for a refused config


_KILL_CONFIG = '''
from stjax import train
from stjax.models import st_llm


def get_config():
  c = train.base_config(st_llm.default_config())
  c.data.synthetic.num_nodes = 4
  c.data.synthetic.num_steps = 864  # 3 days: 36 steps per epoch at batch 16
  c.model.update(dict(pretrained="", trainable="full", llm_layers=1, unfrozen_layers=1, n_embd=16,
                      n_head=2, vocab_size=8, n_positions=8, embed_dim=8))
  c.optim.learning_rate = 3e-3
  c.train.update(dict(batch_size=16, num_epochs=2, checkpoint_every_steps=12, eval_every_steps=24,
                      log_every_steps=5, keep_checkpoints=2, progress_bar=False, plot_nodes=1))
  return c
'''


def test_sigkill_and_restart_with_the_same_command_is_bit_exact(tmp_path):
  """`python -m stjax.train` SIGKILLed after a checkpoint exists, then restarted with the same
  command, ends with the same results and losses as an uninterrupted run (bit-for-bit on CPU)."""
  import os
  import signal
  import time

  (tmp_path / "kill_cfg.py").write_text(_KILL_CONFIG)
  command = lambda workdir: [
    sys.executable,
    "-m",
    "stjax.train",
    f"--config={tmp_path / 'kill_cfg.py'}",
    f"--workdir={workdir}",
  ]
  # One CPU device; sub-second programs go to the session's compilation cache too (tests/conftest.py),
  # so only the first of the three runs pays for XLA compiles (a cached executable is the same
  # program, so exactness is unaffected).
  env = {
    **os.environ,
    "XLA_FLAGS": "",
    "JAX_PLATFORMS": "cpu",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }
  full = subprocess.run(command(tmp_path / "full"), capture_output=True, text=True, timeout=600, env=env)
  assert full.returncode == 0, full.stderr[-2000:]

  cut = tmp_path / "cut"
  proc = subprocess.Popen(command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
  last = cut / "checkpoints" / "last"
  deadline = time.monotonic() + 600
  try:
    while time.monotonic() < deadline and proc.poll() is None:
      # Orbax renames a step's temporary folder to its bare number once the save is complete.
      if last.is_dir() and any(p.name.isdigit() for p in last.iterdir()):
        break
      time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert not (cut / "results.json").exists()
  killed_at = max(int(p.name) for p in last.iterdir() if p.name.isdigit())

  again = subprocess.run(command(cut), capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"at step {killed_at}" in again.stdout  # it resumed, it did not start over
  a, b = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", cut))
  assert b["test"] == a["test"] and b["val"] == a["val"] and b["baselines"] == a["baselines"]
  assert (b["steps"], b["best_step"]) == (a["steps"], a["best_step"]) and 0 < killed_at < a["steps"] == 72
  ma, mb = _lines(tmp_path / "full" / "metrics.jsonl"), _lines(cut / "metrics.jsonl")
  drop = loop.TIMING_KEYS  # timing differs; everything else must be identical
  assert [{k: v for k, v in r.items() if k not in drop} for r in ma] == [
    {k: v for k, v in r.items() if k not in drop} for r in mb
  ]
  for records in (ma, mb):  # training wall time grows record by record, across the resume too
    walls = [r["wall_s"] for r in records]
    assert walls[0] > 0 and walls == sorted(walls)


def test_bfloat16_compute_keeps_time_of_day_exact():
  """Only the series goes to bf16: floor(tod * 288) of a bf16 tod would pick wrong day slots."""
  import jax.numpy as jnp
  import numpy as np

  tod = jnp.asarray(np.arange(288) / 288, jnp.float32)
  inputs = {"x": jnp.ones((2, 3)), "tod": tod, "dow": jnp.arange(7)}
  cast = step_lib._cast_inputs(inputs, jnp.bfloat16)
  assert (
    cast["x"].dtype == jnp.bfloat16
    and cast["tod"].dtype == jnp.float32
    and cast["dow"].dtype == inputs["dow"].dtype
  )
  np.testing.assert_array_equal(np.floor(np.asarray(cast["tod"]) * 288), np.arange(288))
