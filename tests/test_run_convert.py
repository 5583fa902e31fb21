"""`python -m stjax.convert import-st-llm / export-run`: the official ST-LLM `small` fixture as a stjax
run folder, evaluated and predicted against the official output, exported back bit-exactly, and
bad inputs refused with one line and nothing written.

Fixtures (`official/st_llm` in the real-data folder, STJAX_SHARED_DATA; made by running the official
PyTorch code): `small` = N 20, D 32, width 64, 2 heads, 2 blocks, U 1; batch.npz holds 4 windows
with x[..., 0] already scaled by mean 3.0 / std 3.5, output.npz the official eval-mode forward and
its inverse transform.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile

import numpy as np
import pytest

from stjax import evaluate, metrics, predict
from stjax.convert import official_st_llm
from stjax.convert.__main__ import main as convert
from stjax.convert.hf_common import get_path, leaf_paths
from stjax.data import run_data
from stjax.errors import UserError
from stjax.train import run_folder

GEOMETRY = ("--n-head=2", "--unfrozen-layers=1")


@pytest.fixture(scope="module")
def small(shared_data):
  d = shared_data / "official" / "st_llm" / "small"
  if not (d / "best_model.pth").is_file():
    pytest.skip(f"official ST-LLM fixtures not present at {d}")
  return d


@pytest.fixture(scope="module")
def imported(small, tmp_path_factory):
  """The small checkpoint imported with the fixture's scaler; fixture windows in original units."""
  root = tmp_path_factory.mktemp("imported")
  out = root / "run"
  code = convert(
    ["import-st-llm", f"--checkpoint={small / 'best_model.pth'}", f"--output={out}", "--scaler-mean=3.0"]
    + ["--scaler-std=3.5", *GEOMETRY]
  )
  assert code == 0
  b = np.load(small / "batch.npz")
  x = b["x"].copy()
  x[..., 0] = x[..., 0] * b["scaler_std"] + b["scaler_mean"]  # the windows in original units
  np.savez(root / "windows.npz", x=x, y=b["y"])
  return {"run": out, "windows": root / "windows.npz", "root": root, "output": np.load(small / "output.npz")}


def test_imported_run_folder(imported, small):
  run = run_data.load(imported["run"])
  assert (run.num_nodes, run.steps_per_day, run.protocol.name, run.protocol.input_len) == (
    20,
    48,
    "stllm",
    12,
  )
  assert (run.scaler.mean.item(), run.scaler.std.item()) == (3.0, 3.5)
  meta = json.loads((imported["run"] / "imported.json").read_text())
  assert meta["geometry"]["embed_dim"] == 32 and meta["n_head"] == 2 and len(meta["sha256"]) == 64
  config = json.loads((imported["run"] / "config.json").read_text())
  assert config["model"]["name"] == "st_llm" and config["model"]["trainable"] == "pfa(1)"
  with pytest.raises(UserError, match="holds an imported checkpoint"):  # stjax.train there would re-init
    run_folder.save_run_data(imported["run"], None)


def test_predict_windows_gives_the_official_output(imported, tmp_path):
  out = tmp_path / "pred.npz"
  assert (
    predict.main(
      ["--workdir", str(imported["run"]), "--windows", str(imported["windows"]), "--output", str(out)]
    )
    == 0
  )
  got = np.load(out)["prediction"]  # [B, T_out, N, 1] original units
  official = imported["output"]
  want = official["predict"].transpose(0, 3, 2, 1)  # official (B, 1, N, T_out) -> (B, T_out, N, 1)
  print(f"imported small: max |prediction - official| = {np.abs(got - want).max():.2e}")
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose((got - 3.0) / 3.5, official["output"], rtol=0, atol=1e-5)


def test_evaluate_windows_scores_the_official_predictions(imported):
  got, same = evaluate._evaluate(imported["run"], "test", None, str(imported["windows"]), None)
  assert same is None  # cut windows: not known to be the run's test split
  y = np.load(imported["windows"])["y"]
  m = metrics.Metrics("positive", range(1, 13), ("value",), average="horizon_mean")  # the stllm protocol's
  m.update(imported["output"]["predict"].transpose(0, 3, 2, 1), y)
  want = m.compute()
  for k in ("mae", "rmse", "mape", "wape"):
    assert abs(got[k] - want[k]) <= 1e-5 * abs(want[k]), k


def test_official_round_trip_is_bit_exact(imported, small, tmp_path):
  torch = pytest.importorskip("torch")
  out = tmp_path / "official"
  assert convert(["export-run", f"--workdir={imported['run']}", f"--output={out}", "--format=official"]) == 0
  assert sorted(os.listdir(out)) == ["best_model.pth", "scaler.json"]
  back = torch.load(out / "best_model.pth", weights_only=True)
  original = torch.load(small / "best_model.pth", weights_only=True)
  assert list(back) == list(original)  # same keys, same order
  for k in original:
    assert back[k].dtype == original[k].dtype and torch.equal(back[k], original[k]), k
  assert json.loads((out / "scaler.json").read_text()) == {"mean": 3.0, "std": 3.5}


def test_export_is_readable_with_safetensors_and_json_alone(imported, small, tmp_path):
  from safetensors.numpy import load_file

  out = tmp_path / "stjax"
  assert convert(["export", f"--workdir={imported['run']}", f"--output={out}"]) == 0  # = export-run
  meta = json.loads((out / "config.json").read_text())
  tensors = load_file(str(out / "model.safetensors"))
  params = official_st_llm.load(small / "best_model.pth", n_head=2, unfrozen_layers=1).params
  assert set(tensors) == {"params/" + "/".join(p) for p in leaf_paths(params)}
  for key, value in tensors.items():
    want = get_path(params, tuple(key.split("/")[1:]))
    assert value.dtype == want.dtype and np.array_equal(value, want), key
    assert meta["tensors"]["model.safetensors"][key] == {"shape": list(want.shape), "dtype": "float32"}
  data = load_file(str(out / "data.safetensors"))
  assert data["scaler_mean"].item() == 3.0 and data["scaler_std"].item() == 3.5
  assert meta["model"]["n_embd"] == 64 and meta["data"]["protocol"]["name"] == "stllm"
  # The GPT-2 trunk as a Hugging Face folder: the official gpt.gpt2.* tensors under HF names.
  assert meta["backbone"]["folder"] == "llm" and meta["backbone"]["not_in_folder"] == []
  hf = load_file(str(out / "llm" / "model.safetensors"))
  state = np.load(small / "state_dict.npz")
  gpt = {k[len("gpt.gpt2.") :]: state[k] for k in state.files if k.startswith("gpt.gpt2.")}
  assert set(hf) == set(gpt)
  assert all(np.array_equal(hf[k], gpt[k]) for k in gpt)
  hf_config = json.loads((out / "llm" / "config.json").read_text())
  assert (hf_config["n_embd"], hf_config["n_layer"], hf_config["n_head"]) == (64, 2, 2)


def _split_folder(folder, num_nodes: int, rng) -> np.ndarray:
  """An ST-LLM split folder (60/20/20 stride-1 windows, 30-minute steps); returns the series."""
  folder.mkdir()
  steps = 100 + 12 + 12 - 1
  values = np.where(rng.random((steps, num_nodes)) < 0.3, 0.0, rng.gamma(2.0, 4.0, (steps, num_nodes)))
  pos = 7 * 48 - 5 + np.arange(steps)  # starts Sunday 21:30, crosses a week boundary
  calendar = np.stack([(pos % 48) / 48, (pos // 48) % 7], -1)
  series = np.concatenate([values[..., None], np.broadcast_to(calendar[:, None], (steps, num_nodes, 2))], -1)
  windows = np.stack([series[s : s + 24] for s in range(100)]).astype(np.float32)
  for name, (a, b) in {"train": (0, 60), "val": (60, 80), "test": (80, 100)}.items():
    np.savez(folder / f"{name}.npz", x=windows[a:b, :12], y=windows[a:b, 12:])
  return windows


def test_import_with_data_fits_the_training_split_and_evaluates_from_test_npz_alone(small, tmp_path, rng):
  data = tmp_path / "stdata"
  windows = _split_folder(data, 20, rng)
  out = tmp_path / "run"
  assert (
    convert(
      [
        "import-st-llm",
        f"--checkpoint={small / 'best_model.pth'}",
        f"--output={out}",
        f"--data={data}",
        *GEOMETRY,
      ]
    )
    == 0
  )
  run = run_data.load(out)
  x_train = windows[:60, :12, :, 0].astype(np.float64)  # the official StandardScaler's statistics
  np.testing.assert_allclose(
    [run.scaler.mean.item(), run.scaler.std.item()], [x_train.mean(), x_train.std()], rtol=1e-6
  )
  assert abs(run.scaler.mean.item() - windows[:, :12, :, 0].mean()) > 1e-4  # not fitted on val/test
  full, same_full = evaluate._evaluate(out, "test", None, None, None)  # config.data: the whole folder
  alone = tmp_path / "only"
  alone.mkdir()
  os.replace(data / "test.npz", alone / "test.npz")
  os.remove(data / "train.npz")  # no training data any more
  got, same = evaluate._evaluate(out, "test", str(alone / "test.npz"), None, None)
  cut, _ = evaluate._evaluate(out, "test", None, str(alone / "test.npz"), None)  # the same file as windows
  assert same_full and same and got == full == cut


def _evil(path, marker):
  class Exploit:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  with zipfile.ZipFile(path, "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"node_emb": Exploit()}, protocol=2))
    z.writestr("evil/version", "3\n")


def test_bad_inputs_are_one_line_exit_2_and_write_nothing(small, tmp_path, rng, capsys):
  from safetensors.numpy import save_file

  pth = small / "best_model.pth"
  (tmp_path / "cut.pth").write_bytes(pth.read_bytes()[:100_000])
  _evil(tmp_path / "evil.pth", tmp_path / "pwned")
  save_file(
    {"wte.weight": np.zeros((5, 8), np.float32), "h.0.ln_1.weight": np.ones(8, np.float32)},
    str(tmp_path / "gpt2.safetensors"),
  )
  _split_folder(tmp_path / "n21", 21, rng)
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "file").write_text("x")
  scaler = ["--scaler-mean=3", "--scaler-std=3.5", *GEOMETRY]
  cases = [
    ([f"--checkpoint={tmp_path / 'cut.pth'}", *scaler], "truncated or corrupt"),
    ([f"--checkpoint={tmp_path / 'evil.pth'}", *scaler], r"refusing to unpickle (posix|nt|os)\.system"),
    (
      [f"--checkpoint={tmp_path / 'gpt2.safetensors'}", *scaler],
      r"GPT-2 \(Hugging Face\) checkpoint, not an official ST-LLM",
    ),
    (
      [f"--checkpoint={pth}", f"--data={tmp_path / 'n21'}", *GEOMETRY],
      "num_nodes is 21 but the official checkpoint was trained with 20",
    ),
    ([f"--checkpoint={pth}", *GEOMETRY], "give the scaler, or the data"),
    ([f"--checkpoint={pth}", f"--data={tmp_path / 'n21'}", *scaler], "give the scaler, or the data"),
    ([f"--checkpoint={pth}", "--scaler-mean=3", "--scaler-std=-1", *GEOMETRY], "must be a finite number > 0"),
    (
      [f"--checkpoint={pth}", "--scaler-mean=3", "--scaler-std=3.5", "--n-head=3"],
      "n_head: 3 does not divide",
    ),
  ]
  before = set(os.listdir(tmp_path))
  for args, message in cases:
    with pytest.raises(SystemExit) as e:
      convert(["import-st-llm", *args, f"--output={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and re.search(message, err), (args, err)
    assert set(os.listdir(tmp_path)) == before, args  # no output folder, no temporary left behind
  assert not (tmp_path / "pwned").exists()
  with pytest.raises(SystemExit):
    convert(["import-st-llm", f"--checkpoint={pth}", *scaler, f"--output={tmp_path / 'taken'}"])
  assert "output exists and is not an empty folder" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    convert(["export-run", f"--workdir={tmp_path / 'n21'}", f"--output={tmp_path / 'out'}"])
  assert "no config.json (not a stjax.train run folder)" in capsys.readouterr().err
  for args, message in (
    (["--num-layers=2", f"--workdir={tmp_path / 'n21'}"], "--num-layers applies to --source"),
    (["--format=official", f"--source={tmp_path / 'n21'}"], "--format applies to --workdir"),
    ([f"--source={tmp_path / 'n21'}", f"--workdir={tmp_path / 'n21'}"], "not allowed with argument"),
  ):
    with pytest.raises(SystemExit) as e:
      convert(["export", *args, f"--output={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1], (args, err)
  assert set(os.listdir(tmp_path)) == before
