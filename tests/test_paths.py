"""Data paths that exist but cannot be read (symlink loops, broken links, FIFOs, no permission,
read-only folders): one line saying which, from every reader, the registry, downloads and the CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import assert_one_line

from stjax.data import download, paths, registry
from stjax.data.__main__ import main
from stjax.data.formats import kind_of, read_graph, read_node_ids, read_series
from stjax.errors import UserError

LOOP = "symlink loop (a symbolic link on the path leads back to itself)"
AS_ROOT = os.geteuid() == 0  # root reads and writes whatever the permission bits say


@pytest.fixture
def tree(tmp_path):
  """loop.h5 -> itself; a <-> b; broken.npz -> gone.npz; plain.csv; fifo.csv; edges.csv."""
  (tmp_path / "loop.h5").symlink_to("loop.h5")
  (tmp_path / "a").symlink_to("b")
  (tmp_path / "b").symlink_to("a")
  (tmp_path / "broken.npz").symlink_to("gone.npz")
  (tmp_path / "plain.csv").write_text("date,1,2\n2016-01-01 00:00,1,2\n2016-01-01 00:05,3,4\n")
  os.mkfifo(tmp_path / "fifo.csv")
  (tmp_path / "edges.csv").write_text("from,to,distance\n1,2,10\n")
  return tmp_path


@pytest.mark.parametrize(
  "call, target, expected",
  [
    (read_series, "loop.h5", LOOP),
    (read_series, "a", LOOP),  # as an ST-LLM folder
    (read_series, "a/train.npz", LOOP),  # a loop on the way to the file
    (read_graph, "loop.h5", LOOP),
    (kind_of, "loop.h5", LOOP),
    (read_series, "broken.npz", "broken symlink (it points to gone.npz, which does not exist)"),
    (read_series, "plain.csv/x.h5", "file not found (a part of the path is a file, not a folder)"),
    (read_series, "fifo.csv", "not a file or a folder (a device, pipe or socket)"),  # and no hang on open
    (read_series, "nope.h5", "file not found"),
  ],
)
def test_reader_paths_one_line(tree, call, target, expected):
  with pytest.raises(UserError) as e:
    call(tree / target)
  assert_one_line(e, f"{tree / target}: {expected}")


def test_node_id_file_paths(tree):
  with pytest.raises(UserError) as e:
    read_graph(tree / "edges.csv", node_ids=tree / "loop.h5")
  assert_one_line(e, f"{tree / 'loop.h5'}: {LOOP}")
  with pytest.raises(UserError) as e:
    read_node_ids(tree / "ids.txt")
  assert_one_line(e, f"{tree / 'ids.txt'}: node-id file not found")
  (tree / "ids.txt").write_bytes(b"\xff\xfe\x00binary")
  with pytest.raises(UserError) as e:
    read_node_ids(tree / "ids.txt")
  assert_one_line(e, f"{tree / 'ids.txt'}: not a text file of node ids")


@pytest.mark.skipif(AS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_file_and_folder(tree):
  (tree / "secret.csv").write_text("1,2\n")
  (tree / "secret.csv").chmod(0)
  (tree / "closed").mkdir()
  (tree / "closed").chmod(0)
  try:
    closed = "permission denied (cannot reach it: a folder on the way cannot be entered)"
    for target, expected in (
      ("secret.csv", "permission denied (cannot read the file)"),
      ("closed", "permission denied (cannot list the folder)"),
      ("closed/x.h5", closed),
    ):
      with pytest.raises(UserError) as e:
        read_series(tree / target)
      assert_one_line(e, f"{tree / target}: {expected}")
  finally:
    (tree / "closed").chmod(0o755)


def test_unreadable_file_simulated(tree, monkeypatch):
  """The same refusal where permission bits cannot make it (as root): open() says EACCES."""
  secret = str(tree / "plain.csv")
  real_open = os.open

  def fake_open(path, flags, *args, **kwargs):
    if os.fspath(path) == secret:
      raise PermissionError(13, "Permission denied", secret)
    return real_open(path, flags, *args, **kwargs)

  monkeypatch.setattr(os, "open", fake_open)
  with pytest.raises(UserError) as e:
    read_series(secret, step_minutes=5, start="2016-01-01")
  assert_one_line(e, f"{secret}: permission denied (cannot read the file)")


def test_registry_loop_is_not_not_found(tree, monkeypatch):
  monkeypatch.setenv("STJAX_DATA", str(tree / "data"))
  monkeypatch.setenv("STJAX_SHARED_DATA", str(tree / "no-shared"))
  (tree / "data" / "nycbike1").mkdir(parents=True)
  (tree / "data" / "nycbike1" / "NYCBike1.npz").symlink_to("NYCBike1.npz")
  with pytest.raises(UserError) as e:
    registry.resolve("nycbike1")
  assert_one_line(e, f"{tree / 'data' / 'nycbike1' / 'NYCBike1.npz'}: {LOOP}")
  monkeypatch.setenv("STJAX_DATA", str(tree / "a"))  # the data dir itself loops
  with pytest.raises(UserError) as e:
    registry.find_local("nycbike1")
  assert_one_line(e, f"{tree / 'a' / 'nycbike1' / 'NYCBike1.npz'}: {LOOP}")


@pytest.mark.parametrize(
  "data_dir, expected",
  [
    ("a", f"a/nycbike1: {LOOP}"),
    ("plain.csv", "plain.csv/nycbike1: cannot create the folder (Not a directory)"),
    ("read-only", "read-only/nycbike1: folder is read-only (cannot write files in it)"),
  ],
)
def test_download_into_unusable_data_dir(tree, monkeypatch, data_dir, expected):
  target = tree / data_dir / "nycbike1"
  if data_dir == "read-only":
    target.mkdir(parents=True)
    target.chmod(0o555)
    if AS_ROOT:  # root may write there anyway: say what a read-only mount says
      real_access = os.access
      monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if os.fspath(p) == str(target) else real_access(p, mode, **kw),
      )
  with pytest.raises(UserError) as e:
    download.download_file("http://127.0.0.1:9/never-fetched", target / "NYCBike1.npz", progress=False)
  assert_one_line(e, f"{tree}/{expected}")
  assert not (target / "NYCBike1.npz.part").exists()


def test_cli_one_line_for_a_loop(tree, capsys):
  with pytest.raises(SystemExit) as e:
    main(["info", str(tree / "loop.h5")])
  assert e.value.code == 2 and capsys.readouterr().err == f"stjax: error: {tree / 'loop.h5'}: {LOOP}\n"


def test_paths_helpers(tree):
  assert paths.present(tree / "broken.npz") and not paths.present(tree / "nope")
  with pytest.raises(UserError, match="symlink loop"):
    paths.present(tree / "a" / "x")
  assert paths.writable_folder(tree / "new" / "deeper") == tree / "new" / "deeper"
  np.save(tree / "new" / "deeper" / "x.npy", np.zeros(1))  # really writable
