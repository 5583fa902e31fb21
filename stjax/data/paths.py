"""Local data paths: one clear line for each way a path can fail before a reader or a download
touches it (not found, broken symlink, symlink loop, permission denied, read-only folder, ...)."""

from __future__ import annotations

import errno
import os
import pathlib
import stat

from stjax.errors import UserError


def _why(path: pathlib.Path, e: OSError) -> str:
  """What an OSError from stat/open/listdir of `path` means, in a few words."""
  if e.errno == errno.ELOOP:
    return "symlink loop (a symbolic link on the path leads back to itself)"
  if isinstance(e, FileNotFoundError):
    if path.is_symlink():
      return f"broken symlink (it points to {os.readlink(path)}, which does not exist)"
    return "file not found"
  if isinstance(e, PermissionError):
    return "permission denied"
  if isinstance(e, NotADirectoryError):
    return "file not found (a part of the path is a file, not a folder)"
  return f"cannot access ({e.strerror or e})"


def existing(path: str | os.PathLike) -> pathlib.Path:
  """`path` (~ expanded) when it is a file that can be opened or a folder that can be listed."""
  path = pathlib.Path(path).expanduser()
  action = "reach it: a folder on the way cannot be entered"
  try:
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
      action = "list the folder"
      os.scandir(path).close()
    elif stat.S_ISREG(mode):
      action = "read the file"
      os.close(os.open(path, os.O_RDONLY))
    else:
      raise UserError(f"{path}: not a file or a folder (a device, pipe or socket)")
  except OSError as e:
    why = _why(path, e)
    raise UserError(
      f"{path}: {why} (cannot {action})" if why == "permission denied" else f"{path}: {why}"
    ) from None
  return path


def readable_file(path: str | os.PathLike, what: str = "file") -> pathlib.Path:
  """`existing(path)`, which must be a file; the messages name it as `what` ('node-id file', ...)."""
  try:
    path = existing(path)
  except UserError as e:
    raise UserError(str(e).replace(": file not found", f": {what} not found", 1)) from None
  if not path.is_file():
    raise UserError(f"{path}: expected a {what}, found a folder")
  return path


def present(path: pathlib.Path) -> bool:
  """Whether something is at `path` (a file or a link, even a broken one); UserError when that
  cannot be told (a loop or a folder without permission on the way)."""
  try:
    os.lstat(path)
    return True
  except (FileNotFoundError, NotADirectoryError):
    return False
  except OSError as e:
    raise UserError(f"{path}: {_why(path, e)}") from None


def writable_folder(path: str | os.PathLike) -> pathlib.Path:
  """`path` created if needed; UserError when it cannot be, or files cannot be written in it."""
  path = pathlib.Path(path).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    if present(path):
      existing(path)  # a loop or broken link is said as such
    reason = "a file is in the way" if isinstance(e, FileExistsError) else (e.strerror or str(e))
    raise UserError(f"{path}: cannot create the folder ({reason})") from None
  existing(path)
  if not os.access(path, os.W_OK | os.X_OK):  # read-only mount (for root too) or no write permission
    raise UserError(f"{path}: folder is read-only (cannot write files in it)")
  return path
