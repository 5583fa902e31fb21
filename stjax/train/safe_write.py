"""Writes of a run folder that either complete or leave the previous file, and their errors.

Every file the trainer writes whole (config.json, results.json, results.md, the plots) goes through
`atomic_write_bytes`: a temporary file in the same folder, fsync, rename. A full disk (ENOSPC), a
read-only or vanished folder (EROFS, EACCES, ENOENT) raise `UserError` naming the file, so CLIs
print one line and the previous version of the file stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import tempfile
from typing import Iterator

from stjax.errors import UserError


def reason(e: BaseException) -> str:
  """A short human reason for a failed write: the OS message, else the first line of `e`."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  for known in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES):  # wrapped in a message
    if os.strerror(known) in str(e):
      return os.strerror(known)
  first = (str(e).strip().splitlines() or [type(e).__name__])[0]
  return first if len(first) <= 200 else first[:197] + "..."


def _umask() -> int:
  """The process umask, read without changing it (other threads may be creating files)."""
  try:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
      if line.startswith("Umask:"):
        return int(line.split()[1], 8)
  except OSError:
    pass
  return 0o022


@contextlib.contextmanager
def user_errors(path: str | os.PathLike, what: str = "write") -> Iterator[None]:
  """Turns an OSError while writing `path` into `UserError("<path>: cannot <what> (<reason>)")`."""
  try:
    yield
  except OSError as e:
    raise UserError(f"{path}: cannot {what} ({reason(e)})") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file in the same folder and a rename; the file gets
  the usual permissions (0666 minus the umask). UserError (one line) if the folder is full or
  read-only; the previous `path`, if any, is then unchanged and no temporary file is left."""
  path = pathlib.Path(path)
  with user_errors(path):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp creates 0600
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      pathlib.Path(tmp).unlink(missing_ok=True)
      raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """`atomic_write_bytes` of UTF-8 text."""
  atomic_write_bytes(path, text.encode())


def atomic_save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
  """A matplotlib figure saved as PNG with `atomic_write_bytes` (never half a PNG)."""
  import io

  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", **savefig_kwargs)
  atomic_write_bytes(path, buffer.getvalue())
