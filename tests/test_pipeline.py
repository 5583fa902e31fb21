"""grain pipelines: epoch shuffles, dropped remainder, host shards, exact resume, padded eval."""

import numpy as np
import pytest

from stjax.data import (
  Dataset,
  bundle_from_dataset,
  eval_batches,
  get_protocol,
  pipeline,
  regular_calendar,
  steps_per_epoch,
  train_batches,
)
from stjax.errors import UserError


@pytest.fixture(scope="module")
def source():
  rng = np.random.default_rng(0)
  values = rng.normal(50, 5, size=(130, 3, 1)).astype(np.float32)
  tod, dow = regular_calendar(130, 5)
  ds = Dataset("toy", values, ("v",), 5.0, tod, dow)
  p = get_protocol("dcrnn").resolve(288, input_len=4, output_len=2)
  return bundle_from_dataset(ds, p).splits["train"]  # round(0.7 * 125) = 88 windows


def collect(it, n=None):
  out = []
  for b in it:
    out.append(b)
    if n is not None and len(out) == n:
      break
  return out


def test_epochs_are_permutations_with_remainder_dropped(source):
  n, bs = len(source), 16
  assert n == 88 and steps_per_epoch(source, bs) == 5
  batches = collect(train_batches(source, bs, seed=7, num_epochs=3))
  assert len(batches) == 15
  epochs = [np.concatenate([b["index"] for b in batches[e * 5 : (e + 1) * 5]]) for e in range(3)]
  for e in epochs:
    assert len(e) == 80 and len(set(e.tolist())) == 80 and e.max() < n
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
  b = batches[3]
  ref = source.batch(b["index"])
  for k in ("x", "tod", "dow", "y"):
    np.testing.assert_array_equal(b[k], ref[k])
  assert b["valid"].all() and b["x"].shape == (16, 4, 3, 1)
  again = collect(train_batches(source, bs, seed=7, num_epochs=3))
  assert all(np.array_equal(a["index"], c["index"]) for a, c in zip(batches, again))
  other = collect(train_batches(source, bs, seed=8, num_epochs=1))
  assert not np.array_equal(other[0]["index"], batches[0]["index"])


def test_hosts_take_their_rows_of_each_global_batch(source, monkeypatch):
  whole = collect(train_batches(source, 16, seed=3, num_epochs=2))
  monkeypatch.setattr(pipeline.jax, "process_count", lambda: 4)
  shards = []
  for h in range(4):
    monkeypatch.setattr(pipeline.jax, "process_index", lambda h=h: h)
    shards.append(collect(train_batches(source, 16, seed=3, num_epochs=2)))
    evals = collect(eval_batches(source, 32))
    assert all(b["index"].shape == (8,) for b in evals)
  for step, b in enumerate(whole):
    np.testing.assert_array_equal(np.concatenate([s[step]["index"] for s in shards]), b["index"])
  with pytest.raises(UserError, match="config.train.batch_size: 10 must be a positive multiple of the 4"):
    train_batches(source, 10, seed=0)


def test_exact_resume_from_iterator_state(source):
  it = train_batches(source, 8, seed=1, num_epochs=2)
  collect(it, 13)  # crosses the epoch boundary (11 steps per epoch)
  state = it.get_state()
  rest = collect(it)
  fresh = train_batches(source, 8, seed=1, num_epochs=2)
  fresh.set_state(state)
  resumed = collect(fresh)
  assert len(resumed) == len(rest) == 22 - 13
  for a, b in zip(rest, resumed):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["x"], b["x"])


def test_eval_covers_every_window_once_with_padding(source):
  batches = collect(eval_batches(source, 32))
  assert len(batches) == 3 and all(b["x"].shape == (32, 4, 3, 1) for b in batches)
  valid = np.concatenate([b["valid"] for b in batches])
  idx = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(idx[valid], np.arange(88))
  assert valid.sum() == 88 and not valid[88:].any()
  np.testing.assert_array_equal(batches[-1]["y"][:24], source.batch(np.arange(64, 88))["y"])


def test_bad_batch_settings(source):
  with pytest.raises(UserError, match="larger than the 88 train windows"):
    train_batches(source, 128, seed=0)
  with pytest.raises(UserError, match="num_epochs"):
    train_batches(source, 8, seed=0, num_epochs=0)
  with pytest.raises(UserError, match="config.train.eval_batch_size"):
    eval_batches(source, 0)
