"""metrics.jsonl: one JSON object per line, appended whole or not at all.

`append` writes a record with one `write` and, when that fails (full disk, read-only folder),
cuts the file back to its previous length, so no half line stays behind. A torn last line left by
a crash (SIGKILL, power loss) is tolerated by `read` and removed by `append` and `truncate_after`.
"""

from __future__ import annotations

import json
import os
import pathlib

from stjax.errors import UserError
from stjax.train import safe_write


def _complete_length(data: bytes) -> int:
  """Length of `data` up to and including its last newline (what complete lines occupy)."""
  return data.rfind(b"\n") + 1


def read(path: str | os.PathLike) -> list[dict]:
  """The records of `path` ([] if absent). A torn last line (no newline, or not valid JSON) is
  ignored; an invalid line elsewhere is a UserError naming it."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  data = path.read_bytes()
  lines = data[: _complete_length(data)].decode(errors="replace").splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number == len(lines):  # written up to a newline, then cut: still the torn tail
        continue
      raise UserError(f"{path}:{number}: not a JSON record; remove that line to continue") from None
  return records


def _trim_torn_tail(fd: int) -> int:
  """Cuts a torn last line off the open file `fd`; returns the resulting length."""
  size = os.fstat(fd).st_size
  if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
    return size
  tail_start = max(0, size - (1 << 20))
  keep = tail_start + _complete_length(os.pread(fd, size - tail_start, tail_start))
  os.ftruncate(fd, keep)
  return keep


def append(path: str | os.PathLike, record: dict) -> None:
  """Appends `record` as one line; on failure the file is as before and a UserError says why."""
  line = (json.dumps(record) + "\n").encode()
  with safe_write.user_errors(path, "append a record"):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      size = _trim_torn_tail(fd)
      try:
        written = os.pwrite(fd, line, size)
        if written != len(line):
          raise OSError(28, os.strerror(28))  # a short write: the disk filled up mid-line
      except OSError:
        os.ftruncate(fd, size)
        raise
    finally:
      os.close(fd)


def truncate_after(path: str | os.PathLike, last_step: int) -> None:
  """Drops records with `step` > `last_step` (logged by a run that died before its next
  checkpoint) and any torn last line; rewrites the file atomically when something changes."""
  path = pathlib.Path(path)
  if not path.exists():
    return
  records = read(path)
  kept = [r for r in records if r["step"] <= last_step]
  text = "".join(json.dumps(r) + "\n" for r in kept)
  if text.encode() != path.read_bytes():
    safe_write.atomic_write_text(path, text)
