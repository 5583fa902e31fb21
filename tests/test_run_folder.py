"""Self-contained run folders: a tiny ST-LLM run, then evaluate / predict with its training data gone.

One run is trained on a CSV series (with a graph) and the CSV is deleted before any test: the run
folder (config.json, run.json, scaler.npz, graph.npz, checkpoints) plus a test-only file must then
reproduce results.json, and forecasts need no data at all. References are computed from the
evaluation path while the data still exist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from stjax import evaluate, predict
from stjax.data import run_data, synthetic
from stjax.data.windows import build_data
from stjax.errors import UserError
from stjax.models import st_llm
from stjax.train import loop, step
from stjax.train.config import base_config

NODE_IDS = ("s7", "s3", "s9", "s1", "s5")


def _write_csv(path, timestamps, values, ids=NODE_IDS):
  """A node-column CSV with a date column; values with enough digits to read back bit-exactly."""
  lines = ["date," + ",".join(ids)]
  for ts, row in zip(timestamps, values):
    lines.append(f"{ts}," + ",".join(format(float(v), ".9g") for v in row))
  path.write_text("\n".join(lines) + "\n")


def _config(data_dir):
  c = base_config(st_llm.default_config())
  c.data.name = "toy"
  c.data.path = str(data_dir / "toy.csv")
  c.data.graph_path = str(data_dir / "toy_adj.csv")
  c.data.protocol = "dcrnn"
  c.model.update(
    dict(
      pretrained="",
      trainable="full",
      llm_layers=1,
      unfrozen_layers=1,
      n_embd=16,
      n_head=2,
      vocab_size=8,
      n_positions=8,
      embed_dim=8,
    )
  )
  c.optim.learning_rate = 3e-3
  c.train.update(
    dict(
      batch_size=16, max_steps=24, eval_every_steps=12, log_every_steps=12, progress_bar=False, plot_nodes=1
    )
  )
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Trains the tiny run, keeps references, writes test-only inputs, then deletes the data."""
  root = tmp_path_factory.mktemp("run")
  data_dir = root / "data"
  data_dir.mkdir()
  ds = synthetic.generate(num_nodes=5, num_steps=1152, seed=3)
  _write_csv(data_dir / "toy.csv", ds.timestamps, ds.values[:, :, 0])
  np.savetxt(data_dir / "toy_adj.csv", ds.adjacency, delimiter=",", fmt="%.9g")
  config = _config(data_dir)
  workdir = root / "work"
  results = loop.train_and_evaluate(config, str(workdir))
  bundle = build_data(config.data)
  f = predict.Forecaster.from_workdir(workdir)
  test = bundle.splits["test"]
  window = {k: v for k, v in test.batch(np.arange(10)).items() if k in ("x", "tod", "dow")}
  reference = np.asarray(
    jax.jit(step.make_predict_fn(f.experiment.model, bundle.target_scaler))(f.state, window)
  )
  full, times = bundle.dataset, test.times
  ts, values = full.timestamps, full.values[:, :, 0]
  inputs = {
    "test": data_dir / "test_only.csv",
    "recent": data_dir / "recent.csv",
    "windows": data_dir / "w.npz",
  }
  span = slice(times[0] - 11, times[-1] + 13)  # exactly the steps the test windows read
  _write_csv(inputs["test"], ts[span], values[span])
  _write_csv(inputs["recent"], ts[times[5] - 11 : times[9] + 1], values[times[5] - 11 : times[9] + 1])
  reads = times[:10, None] + np.arange(-11, 1)[None]  # [10, 12] steps of the first 10 test windows
  per_node = lambda a: np.broadcast_to(a[reads][..., None], reads.shape + (5,))
  x = np.stack([values[reads], per_node(full.time_of_day), per_node(full.day_of_week)], -1).astype(np.float32)
  np.savez(inputs["windows"], x=x, y=full.values[times[:10, None] + np.arange(1, 13)[None]])
  train = bundle.splits["train"].times
  train_inputs = values[train[:, None] + np.arange(-11, 1)[None]].astype(np.float64)
  expected = {"mean": train_inputs.mean(), "std": train_inputs.std(), "all_mean": values.mean()}
  adjacency = full.adjacency.copy()
  os.remove(data_dir / "toy.csv")  # the training data are gone from here on
  os.remove(data_dir / "toy_adj.csv")
  return dict(
    workdir=workdir,
    results=results,
    reference=reference,
    timestamps=ts,
    times=times,
    inputs=inputs,
    expected=expected,
    adjacency=adjacency,
    root=root,
  )


def test_run_folder_stores_the_training_only_scaler_protocol_and_graph(run):
  w = run["workdir"]
  meta = json.loads((w / "run.json").read_text())
  assert meta["dataset"]["node_ids"] == list(NODE_IDS) and meta["dataset"]["steps_per_day"] == 288
  assert meta["protocol"]["name"] == "dcrnn" and meta["protocol"]["input_offsets"] == list(range(-11, 1))
  assert meta["splits"]["test"]["windows"] == len(run["times"]) and meta["num_train_windows"] == 790
  stored = run_data.load(w)
  # An independent float64 fit over the inputs of the training windows (each step as often as it
  # appears): the stored scaler is that, and not a fit that saw the test data.
  np.testing.assert_allclose(stored.scaler.mean[0, 0], run["expected"]["mean"], rtol=1e-6)
  np.testing.assert_allclose(stored.scaler.std[0, 0], run["expected"]["std"], rtol=1e-6)
  assert abs(stored.scaler.mean[0, 0] - run["expected"]["all_mean"]) > 1e-3
  np.testing.assert_array_equal(stored.adjacency, run["adjacency"])


def test_evaluate_reproduces_results_from_a_test_only_file(run):
  metrics, same = evaluate._evaluate(run["workdir"], "test", str(run["inputs"]["test"]), None, None)
  assert same and evaluate.compare(run["results"]["test"], metrics, "test") == []
  assert metrics["mae"] == run["results"]["test"]["mae"]
  with pytest.raises(
    UserError, match=r"toy.csv: file not found \(or evaluate without the run's data: --data"
  ):
    evaluate.evaluate_workdir(run["workdir"])


def test_cli_evaluate_and_predict_without_training_data(run, tmp_path):
  w, inputs = run["workdir"], run["inputs"]
  cli = lambda *a: subprocess.run([sys.executable, "-m", *a], capture_output=True, text=True, timeout=600)
  r = cli("stjax.evaluate", f"--workdir={w}", f"--data={inputs['test']}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "Reproduces" in r.stdout
  out = tmp_path / "forecast.npz"
  r = cli("stjax.predict", f"--workdir={w}", f"--input={inputs['recent']}", f"--output={out}", "--every-step")
  assert r.returncode == 0, r.stderr[-2000:]
  got = np.load(out)
  np.testing.assert_allclose(got["prediction"], run["reference"][5:10], rtol=1e-5, atol=1e-5)
  issued = run["timestamps"][run["times"][5:10]].astype("datetime64[s]")
  np.testing.assert_array_equal(got["issued_at"], issued)
  np.testing.assert_array_equal(got["target_time"][:, 0], issued + np.timedelta64(300, "s"))
  assert list(got["node_ids"]) == list(NODE_IDS) and list(got["horizon"]) == list(range(1, 13))


def test_predict_windows_and_csv_output(run, tmp_path):
  out = tmp_path / "pred.csv"
  assert (
    predict.main(
      ["--workdir", str(run["workdir"]), "--windows", str(run["inputs"]["windows"]), "--output", str(out)]
    )
    == 0
  )
  lines = out.read_text().splitlines()
  assert lines[0] == "window,horizon," + ",".join(NODE_IDS) and len(lines) == 1 + 10 * 12
  table = np.array([[float(v) for v in ln.split(",")[2:]] for ln in lines[1:]]).reshape(10, 12, 5)
  np.testing.assert_allclose(table, run["reference"][..., 0], rtol=1e-5, atol=1e-5)
  # Columns in another order are matched to the run's nodes by id.
  header, *rows = run["inputs"]["recent"].read_text().splitlines()
  order = [0, 3, 1, 5, 2, 4]
  shuffled = tmp_path / "shuffled.csv"
  shuffled.write_text("\n".join(",".join(ln.split(",")[i] for i in order) for ln in [header] + rows) + "\n")
  npz = tmp_path / "pred.npz"
  predict.main(["--workdir", str(run["workdir"]), "--input", str(shuffled), "--output", str(npz)])
  np.testing.assert_allclose(np.load(npz)["prediction"][0], run["reference"][9], rtol=1e-5, atol=1e-5)


def _bad_inputs(run, tmp_path):
  """(name, file, expected message) for inputs that do not fit the run."""
  ts, times = run["timestamps"], run["times"]
  rng = np.random.default_rng(0)
  good = rng.uniform(20, 60, size=(20, 5))
  stamps = ts[times[0] : times[0] + 20]
  cases = []

  def case(name, message, stamps=stamps, values=good, ids=NODE_IDS):
    path = tmp_path / f"{name}.csv"
    _write_csv(path, stamps, values, ids)
    cases.append((name, path, message))

  case("nodes", "4 nodes, but the run was trained on 5", values=good[:, :4], ids=NODE_IDS[:4])
  case("few", "5 steps, but the model reads the last 12", stamps=stamps[:5], values=good[:5])
  case(
    "gap",
    "10 minutes between .* but the run's step is 5 minutes",
    stamps=np.delete(stamps, 7),
    values=good[1:],
  )
  case("nan", "NaN/inf reading at step 3, node 2", values=_nan(good))
  case("ids", "node ids differ from the run's .*'s8'", ids=("s7", "s3", "s9", "s1", "s8"))
  case("twice", "node id 's7' appears more than once", ids=("s7", "s3", "s9", "s1", "s7"))
  x = np.zeros((2, 12, 4, 3), np.float32)
  np.savez(tmp_path / "w_nodes.npz", x=x)
  cases.append(("windows", tmp_path / "w_nodes.npz", "4 nodes, but the run was trained on 5"))
  np.savez(tmp_path / "w_short.npz", x=np.zeros((2, 8, 5, 3), np.float32))
  cases.append(("windows", tmp_path / "w_short.npz", "windows of 8 steps, but the model reads 12"))
  return cases


def _nan(values):
  out = values.copy()
  out[3, 2] = np.nan
  return out


def test_predict_refuses_inputs_that_do_not_fit_with_one_line(run, tmp_path, capsys):
  for name, path, message in _bad_inputs(run, tmp_path):
    out = tmp_path / f"out_{name}.npz"
    flag = "--windows" if name == "windows" else "--input"
    with pytest.raises(SystemExit) as e:
      predict.main(["--workdir", str(run["workdir"]), flag, str(path), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("stjax: error: "), (name, err)
    assert re.search(message, err), (name, err)
    assert not out.exists() and not list(tmp_path.glob(".out_*")), name
  with pytest.raises(SystemExit):
    predict.main(
      ["--workdir", str(run["workdir"]), "--input", str(path), "--output", str(tmp_path / "x.txt")]
    )
  assert "must end in .npz or .csv" in capsys.readouterr().err


def test_export_run_of_a_trained_run_without_its_data(run, tmp_path):
  """The trained run exported with its data gone: every checkpoint leaf bit-exact in safetensors,
  the stored scaler and graph beside it, and the official layout for this ST-LLM."""
  from safetensors.numpy import load_file

  from stjax.convert.__main__ import main as convert
  from stjax.convert.hf_common import get_path, leaf_paths, plain

  out = tmp_path / "export"
  assert convert(["export-run", f"--workdir={run['workdir']}", f"--output={out}"]) == 0
  params = plain(jax.device_get(predict.Forecaster.from_workdir(run["workdir"]).state.params))
  tensors = load_file(str(out / "model.safetensors"))
  assert set(tensors) == {"params/" + "/".join(p) for p in leaf_paths(params)}
  assert all(
    np.array_equal(tensors[k], np.asarray(get_path(params, tuple(k.split("/")[1:])))) for k in tensors
  )
  data = load_file(str(out / "data.safetensors"))
  stored = run_data.load(run["workdir"])
  np.testing.assert_array_equal(data["adjacency"], run["adjacency"])
  np.testing.assert_array_equal(data["scaler_mean"], stored.scaler.mean)
  meta = json.loads((out / "config.json").read_text())
  assert meta["data"]["dataset"]["node_ids"] == list(NODE_IDS) and meta["backbone"]["folder"] == "llm"
  assert (
    convert(
      ["export-run", f"--workdir={run['workdir']}", f"--output={tmp_path / 'off'}", "--format=official"]
    )
    == 0
  )
  torch = pytest.importorskip("torch")
  official = torch.load(tmp_path / "off" / "best_model.pth", weights_only=True)
  assert official["Temb.time_day"].shape == (288, 8) and official["start_conv.weight"].shape == (8, 36, 1, 1)


def test_stored_facts_round_trip_and_guard_resumes(tmp_path):
  """run.json + scaler.npz load back equal (per-node scaler, all channels); a resume whose data
  changed is refused naming what differs; a fresh start replaces the stored facts."""
  import shutil
  import types

  from stjax.data.protocols import get_protocol
  from stjax.data.windows import bundle_from_dataset, default_data_config
  from stjax.train.run_folder import save_run_data

  ds = synthetic.generate(num_nodes=4, num_steps=700, seed=1)
  protocol = get_protocol("sthsepnet").resolve(ds.steps_per_day, input_len=12, output_len=6)
  config = types.SimpleNamespace(data=default_data_config())
  exp = types.SimpleNamespace(config=config, bundle=bundle_from_dataset(ds, protocol))
  first = save_run_data(tmp_path, exp)
  back = run_data.load(tmp_path)
  assert back.differences(first) == [] and back.scaler.mean.shape == (4, 1) and back.protocol == protocol
  (tmp_path / "checkpoints" / "last" / "10").mkdir(parents=True)
  save_run_data(tmp_path, exp)  # the same data: a resume goes on
  changed = types.SimpleNamespace(
    config=config, bundle=bundle_from_dataset(ds.replace(values=ds.values * 1.01), protocol)
  )
  with pytest.raises(
    UserError, match=r"data differ from those the run started with \(splits, scaler.mean, scaler.std differ"
  ):
    save_run_data(tmp_path, changed)
  shutil.rmtree(tmp_path / "checkpoints")
  save_run_data(tmp_path, changed)  # a fresh start replaces them
  np.testing.assert_array_equal(run_data.load(tmp_path).scaler.mean, changed.bundle.scaler.mean)


def test_predict_windows_fills_zeros_as_the_run_trained(run, tmp_path):
  """A run trained with config.data.fill_missing = "last" fills zeros of given windows the same way
  (each window on its own; zeros before any reading take the training scaler's mean)."""
  filled_run = tmp_path / "work"
  shutil.copytree(run["workdir"], filled_run)
  cfg = json.loads((filled_run / "config.json").read_text())
  cfg["data"]["fill_missing"] = "last"
  (filled_run / "config.json").write_text(json.dumps(cfg))
  w = dict(np.load(run["inputs"]["windows"]))
  rng = np.random.default_rng()
  holes = rng.random(w["x"].shape[:3]) < 0.3
  holes[0, :4, 0] = True  # a node missing since the window began
  x = w["x"].copy()
  x[..., 0][holes] = 0.0
  np.savez(tmp_path / "holes.npz", x=x)
  expected = x.copy()  # an independent loop: the last non-zero reading before, else the mean
  mean = float(run_data.load(run["workdir"]).scaler.mean[0, 0])
  for b, n in np.ndindex(x.shape[0], x.shape[2]):
    last = mean
    for t in range(x.shape[1]):
      if x[b, t, n, 0] == 0:
        expected[b, t, n, 0] = last
      else:
        last = x[b, t, n, 0]
  np.savez(tmp_path / "filled.npz", x=expected)
  got, want = tmp_path / "got.npz", tmp_path / "want.npz"
  assert (
    predict.main(
      ["--workdir", str(filled_run), "--windows", str(tmp_path / "holes.npz"), "--output", str(got)]
    )
    == 0
  )
  assert (
    predict.main(
      ["--workdir", str(run["workdir"]), "--windows", str(tmp_path / "filled.npz"), "--output", str(want)]
    )
    == 0
  )
  np.testing.assert_allclose(np.load(got)["prediction"], np.load(want)["prediction"], rtol=1e-6, atol=1e-6)
  plain = tmp_path / "plain.npz"  # the same holes without the rule give other forecasts
  assert (
    predict.main(
      ["--workdir", str(run["workdir"]), "--windows", str(tmp_path / "holes.npz"), "--output", str(plain)]
    )
    == 0
  )
  assert np.abs(np.load(plain)["prediction"] - np.load(want)["prediction"]).max() > 1e-3
