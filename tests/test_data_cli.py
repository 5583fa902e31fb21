"""`python -m stjax.data` as a user runs it (subprocess): list, info on fixtures, bad paths."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from stjax.data import registry
from stjax.data.__main__ import main


def _run(*args, env=None, cwd=None):
  full_env = {**os.environ, **(env or {})}
  return subprocess.run(
    [sys.executable, "-m", "stjax.data", *map(str, args)],
    capture_output=True,
    text=True,
    env=full_env,
    cwd=cwd,
    timeout=120,
  )


def test_list(tmp_path):
  r = _run("list", env={"STJAX_DATA": str(tmp_path), "STJAX_SHARED_DATA": str(tmp_path / "none")})
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines[0].split()[:6] == ["name", "nodes", "steps", "step", "protocol", "local"]
  rows = {
    line.split()[0]: line.split() for line in lines[1:] if line.strip() and not line.startswith("data dir")
  }
  assert set(rows) == set(registry.DATASETS)
  assert (
    rows["metr-la"][1:3] == ["207", "34272"] and rows["metr-la"][5] == "dcrnn" and rows["metr-la"][6] == "no"
  )
  assert rows["nycbike1"][1:3] == ["128", "4392"] and rows["nycbike1"][5] == "stssl"


def test_info_series_and_graph_fixtures(tmp_path):
  t, n = 48, 3
  values = np.arange(t * n, dtype=np.float64).reshape(t, n) % 7
  values[0, 0] = np.nan
  values[1, 1] = np.inf
  lines = ["date,a,b,c"] + [
    f"2024-01-01 {h // 2:02d}:{30 * (h % 2):02d}:00," + ",".join(str(v) for v in row)
    for h, row in enumerate(values[:t])
  ]
  (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
  r = _run("info", tmp_path / "s.csv")
  assert r.returncode == 0, r.stderr
  zeros = int((values == 0).sum())
  assert f"series s: {t} steps x {n} nodes x 1 channels (value)" in r.stdout
  assert "time: 2024-01-01T00:00:00 .. 2024-01-01T23:30:00, step 30 min" in r.stdout
  assert (
    f"missing ratio (zeros and NaN): {(zeros + 1) / values.size:.4%}  (zeros {zeros}, NaN 1, inf 1)"
    in r.stdout
  )


def test_info_graph_in_process(tmp_path, capsys):
  adj = np.array([[1, 0.5, 0], [0.5, 0, 0], [0, 0.2, 1]])
  (tmp_path / "g_adj.csv").write_text("0,1,2\n" + "\n".join(",".join(map(str, row)) for row in adj) + "\n")
  assert main(["info", str(tmp_path / "g_adj.csv")]) == 0
  out = capsys.readouterr().out
  assert "3 nodes, 5 non-zeros (3 edges + 2 self-loops)" in out and "symmetric: no" in out


def test_info_bad_path_subprocess_one_line_exit_2(tmp_path):
  r = _run("info", tmp_path / "nope.h5")
  assert r.returncode == 2, (r.stdout, r.stderr)
  assert r.stderr == f"stjax: error: {tmp_path / 'nope.h5'}: file not found\n"


def test_bad_inputs_in_process(tmp_path, capsys):
  """The same `main` (cli_entry-wrapped) in-process, for the other bad inputs (subprocesses are slow)."""
  (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
  (tmp_path / "x.txt").write_text("hello")
  cases = [
    (["info", str(tmp_path / "broken.h5")], "broken.h5: not a readable HDF5 file"),
    (["info", str(tmp_path / "x.txt")], "x.txt: unknown file format '.txt'"),
    (["verify", "no-such-set"], "unknown dataset 'no-such-set' (known: metr-la, "),
    (["download", "no-such-set"], "unknown dataset 'no-such-set' (known: metr-la, "),
  ]
  for argv, message in cases:
    with pytest.raises(SystemExit) as e:
      main(argv)
    err = capsys.readouterr().err
    assert (
      e.value.code == 2 and err.count("\n") == 1 and err.startswith("stjax: error: ") and message in err
    ), err


def test_info_uses_registry_calendar(shared_data, capsys):
  assert main(["info", str(shared_data / "NYC_ST-SSL/NYCBike1/NYCBike1.npz")]) == 0
  out = capsys.readouterr().out
  assert "series NYCBike1: 4392 steps x 128 nodes x 2 channels (inflow, outflow)" in out
  assert "time: 2014-04-01T00:00:00 .. 2014-09-30T23:00:00, step 60 min" in out
  assert main(["info", str(shared_data / "PEMS-BAY/adj_mx_bay.pkl")]) == 0
  assert "325 nodes, 2694 non-zeros (2369 edges + 325 self-loops)" in capsys.readouterr().out
