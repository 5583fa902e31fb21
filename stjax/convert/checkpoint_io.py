"""A converted model on disk: an orbax params checkpoint plus `config.json`, written atomically.

Layout of a stjax checkpoint folder:

    DIR/config.json   {"format": "stjax.gpt2", "version": 1, "config": {GPT2Config fields},
                       "source": "<where the weights came from>"}
    DIR/params/       orbax StandardCheckpointer tree (float32 leaves, GPT-2 names)

Everything is first written into a temporary sibling folder and renamed to DIR at the end, so a
failure leaves nothing at DIR and never replaces a good folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterator

import numpy as np
import orbax.checkpoint as ocp

from stjax.errors import UserError

FORMAT = "stjax.gpt2"
VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


@contextlib.contextmanager
def atomic_directory(output: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields an empty temporary folder that becomes `output` when the block succeeds.

  `output` must not exist or be an empty folder. On any exception the temporary folder is removed
  and `output` is untouched.
  """
  out = pathlib.Path(output).expanduser().absolute()
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise UserError(f"{out}: output exists and is not an empty folder; remove it or choose another")
  if not out.parent.is_dir():
    raise UserError(f"{out.parent}: parent folder of the output does not exist")
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
  try:
    yield tmp
    if out.exists():
      out.rmdir()  # empty (checked above)
    os.rename(tmp, out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)


def is_stjax_checkpoint(folder: pathlib.Path, fmt: str = FORMAT) -> bool:
  """True when `folder/config.json` declares the stjax format `fmt` (GPT-2 by default)."""
  cfg = folder / CONFIG_FILE
  if not cfg.is_file():
    return False
  try:
    return json.loads(cfg.read_text()).get("format") == fmt
  except (json.JSONDecodeError, AttributeError):
    return False


def save(
  output: str | os.PathLike, config_fields: dict[str, Any], params: Any, source: str, fmt: str = FORMAT
) -> pathlib.Path:
  """Writes `params` (nested dict of arrays) and the config to `output` atomically.

  `fmt` names the model family ("stjax.gpt2", "stjax.llama") in config.json.
  """

  params = _to_numpy(params)
  with atomic_directory(output) as tmp:
    (tmp / CONFIG_FILE).write_text(
      json.dumps({"format": fmt, "version": VERSION, "config": config_fields, "source": source}, indent=2)
      + "\n"
    )
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
  return pathlib.Path(output).expanduser().absolute()


def load(folder: str | os.PathLike, fmt: str = FORMAT) -> tuple[dict[str, Any], Any]:
  """Reads a stjax checkpoint folder of format `fmt` -> (config fields dict, params NumPy tree)."""

  folder = pathlib.Path(folder).expanduser().absolute()
  meta_path = folder / CONFIG_FILE
  try:
    meta = json.loads(meta_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{meta_path}: unreadable stjax checkpoint config ({e})") from None
  if meta.get("format") != fmt or meta.get("version") != VERSION:
    raise UserError(
      f"{meta_path}: not a {fmt} checkpoint of version {VERSION} "
      f"(format={meta.get('format')!r}, version={meta.get('version')!r})"
    )
  if not (folder / PARAMS_DIR).is_dir():
    raise UserError(f"{folder / PARAMS_DIR}: missing params checkpoint")
  params = ocp.StandardCheckpointer().restore(folder / PARAMS_DIR)
  return meta["config"], _to_numpy(params)


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {str(k): _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)
