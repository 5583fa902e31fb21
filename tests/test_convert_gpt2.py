"""HF GPT-2 -> stjax conversion: parity with PyTorch on long inputs, truncation, full width, round
trip, sharded and pytorch_model.bin sources, and bad input (one error line, nothing written)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from stjax.convert import hf_gpt2
from stjax.convert.__main__ import main as convert_main
from stjax.models.backbones.gpt2 import GPT2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_gpt2_golden", FIXTURES / "make_gpt2_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

SMALL = dict(vocab_size=13, n_positions=600, n_embd=32, n_head=4, n_layer=3)


def _hf_model(sd: dict, shape: dict):
  cfg = transformers.GPT2Config(**shape, bos_token_id=0, eos_token_id=0)
  model = transformers.GPT2Model(cfg).eval()
  missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
  assert not unexpected and all(".attn.bias" in m or "masked_bias" in m for m in missing)
  return model


@pytest.fixture(scope="module")
def hf_small(tmp_path_factory):
  sd = golden.random_state_dict(np.random.default_rng(7), **SMALL)
  model = _hf_model(sd, SMALL)
  folder = tmp_path_factory.mktemp("hf") / "small"
  model.save_pretrained(folder)
  return folder, sd, model


def _torch_out(model, x):
  with torch.no_grad():
    return model(inputs_embeds=torch.tensor(x)).last_hidden_state.numpy()


def test_convert_truncated_matches_pytorch(hf_small, tmp_path, capsys, rng):
  folder, _, model = hf_small
  out_dir = tmp_path / "ckpt"
  assert convert_main(["gpt2", f"--source={folder}", f"--output={out_dir}", "--num-layers=2"]) == 0
  printed = capsys.readouterr().out
  assert "2 layers, width 32, 4 heads" in printed and str(out_dir) in printed
  assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "params"]
  cfg, params = hf_gpt2.load(out_dir)
  assert cfg.n_layer == 2 and sorted(k for k in params if k.startswith("h_")) == ["h_0", "h_1"]
  x = rng.standard_normal((2, 520, 32)).astype(np.float32)
  full = _torch_out(model, x)
  blocks = model.h
  model.h = blocks[:2]
  try:
    truncated = _torch_out(model, x)
  finally:
    model.h = blocks
  ours = np.asarray(GPT2(cfg).apply({"params": params}, jnp.asarray(x)))
  assert np.abs(ours - truncated).max() <= 1e-4
  assert np.abs(ours - full).max() > 1e-2  # truncation really changed the network


def test_hf_folder_full_depth_matches_pytorch(rng, tmp_path):
  sd = golden.random_state_dict(np.random.default_rng(3), **SMALL)
  model = _hf_model(sd, SMALL)
  model.save_pretrained(tmp_path)
  cfg, params = hf_gpt2.load(tmp_path)
  assert cfg.n_layer == 3
  x = rng.standard_normal((1, 600, 32)).astype(np.float32)
  ours = np.asarray(GPT2(cfg).apply({"params": params}, jnp.asarray(x)))
  assert np.abs(ours - _torch_out(model, x)).max() <= 1e-4


def test_full_width_twelve_heads_causal_and_full(rng, tmp_path):
  shape = dict(vocab_size=7, n_positions=512, n_embd=768, n_head=12, n_layer=1)
  sd = golden.random_state_dict(np.random.default_rng(11), scale=0.05, **shape)
  model = _hf_model(sd, shape)
  model.save_pretrained(tmp_path)
  cfg, params = hf_gpt2.load(tmp_path)
  x = rng.standard_normal((1, 512, 768)).astype(np.float32)
  ours = np.asarray(GPT2(cfg).apply({"params": params}, jnp.asarray(x)))
  assert np.abs(ours - _torch_out(model, x)).max() <= 1e-4
  full = np.asarray(GPT2(cfg.replace(causal=False)).apply({"params": params}, jnp.asarray(x)))
  ref = golden.reference_forward(sd, x, 1, 12, causal=False)
  assert np.abs(full - ref).max() <= 1e-4


def test_round_trip_through_export_is_bit_exact(hf_small, tmp_path, capsys):
  folder, sd, _ = hf_small
  assert convert_main(["gpt2", f"--source={folder}", f"--output={tmp_path / 'ckpt'}"]) == 0
  assert convert_main(["export", f"--source={tmp_path / 'ckpt'}", f"--output={tmp_path / 'hf'}"]) == 0
  assert "model.safetensors" in capsys.readouterr().out
  reloaded = transformers.GPT2Model.from_pretrained(tmp_path / "hf")
  state = {k: v.numpy() for k, v in reloaded.state_dict().items()}
  for name, value in sd.items():
    np.testing.assert_array_equal(state[name], value, err_msg=name)


def test_sharded_safetensors_and_pytorch_bin_read_identically(hf_small, tmp_path):
  folder, sd, model = hf_small
  _, reference = hf_gpt2.load(folder)
  sharded = tmp_path / "sharded"
  model.save_pretrained(sharded, max_shard_size="20KB")
  assert (sharded / "model.safetensors.index.json").is_file()
  binary = tmp_path / "bin"
  binary.mkdir()
  (binary / "config.json").write_text((folder / "config.json").read_text())
  # A GPT2LMHeadModel-style state dict: "transformer." prefix, mask buffers, a tied head.
  state = {f"transformer.{k}": torch.tensor(v) for k, v in sd.items()}
  state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 4, 4))
  state["lm_head.weight"] = state["transformer.wte.weight"]
  torch.save(state, binary / "pytorch_model.bin")
  for other in (sharded, binary):
    _, params = hf_gpt2.load(other)
    for a, b in zip(
      *(sorted(hf_gpt2.to_hf_tensors(hf_gpt2.GPT2Config(**SMALL), p).items()) for p in (reference, params))
    ):
      assert a[0] == b[0]
      np.testing.assert_array_equal(a[1], b[1], err_msg=f"{other.name}: {a[0]}")


def _edit_config(folder: pathlib.Path, **changes):
  cfg = json.loads((folder / "config.json").read_text())
  cfg.update(changes)
  (folder / "config.json").write_text(json.dumps(cfg))


def _drop_tensor(folder: pathlib.Path, name: str):
  from safetensors.numpy import load_file, save_file

  tensors = load_file(folder / "model.safetensors")
  del tensors[name]
  save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
  "case, expected",
  [
    ("no_such_folder", "no such folder"),
    ("no_config", "no config.json"),
    ("no_weights", "no weights found"),
    ("missing_tensor", "missing tensors: h.1.mlp.c_fc.weight"),
    ("shape_mismatch", "tensor wpe.weight has shape (600, 32), but config.json implies (700, 32)"),
    ("unknown_architecture", "unknown architecture"),
    ("too_many_layers", "num_layers: 5 exceeds the 3 layers"),
    ("offline_hub_id", "cannot be reached"),
    ("output_not_empty", "output exists and is not an empty folder"),
  ],
)
def test_bad_input_one_error_line_nothing_written(hf_small, tmp_path, capsys, monkeypatch, case, expected):
  folder, _, _ = hf_small
  src = tmp_path / "src"
  src.mkdir()
  for f in folder.iterdir():
    (src / f.name).write_bytes(f.read_bytes())
  out = tmp_path / "out"
  args = ["gpt2", f"--source={src}", f"--output={out}"]
  if case == "no_such_folder":
    args[1] = f"--source={tmp_path / 'nope'}"
  elif case == "no_config":
    (src / "config.json").unlink()
  elif case == "no_weights":
    (src / "model.safetensors").unlink()
  elif case == "missing_tensor":
    _drop_tensor(src, "h.1.mlp.c_fc.weight")
  elif case == "shape_mismatch":
    _edit_config(src, n_positions=700)
  elif case == "unknown_architecture":
    _edit_config(src, model_type="bert", architectures=["BertModel"])
  elif case == "too_many_layers":
    args.append("--num-layers=5")
  elif case == "offline_hub_id":
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args[1] = "--source=stjax-test/surely-not-cached-gpt2"
  elif case == "output_not_empty":
    out.mkdir()
    (out / "keep.txt").write_text("precious")
  with pytest.raises(SystemExit) as exit_info:
    convert_main(args)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("stjax: error:") and expected in err, err
  if case == "output_not_empty":
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
  else:
    assert not out.exists()
  assert not any(p.name.startswith(".out.tmp") for p in tmp_path.iterdir())
