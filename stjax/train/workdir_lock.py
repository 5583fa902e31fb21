"""One training run per workdir: an exclusive lock on DIR/.lock for the run's whole life.

The lock is an `flock` on DIR/.lock, which holds the holder's pid, host and start time for the
error message. The kernel releases an flock when its process dies (even by SIGKILL), so a lock
left by a dead run is never in the way. On file systems without flock (ENOLCK, EOPNOTSUPP) the
file's content is the lock: a holder on this host whose pid is gone is recognised as stale; one
on another host is reported with the file to delete if that run is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import shutil
import socket
import time

from stjax.errors import UserError
from stjax.train import safe_write

LOCK_NAME = ".lock"


def _describe(holder: dict) -> str:
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {since}"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """`with WorkdirLock(workdir) as lock:` holds the workdir for one run (creating the folder if
  needed; `lock.created` says whether it did). UserError naming the holder if another live run
  holds it, or if the folder cannot be created (read-only, full)."""

  def __init__(self, workdir: str | os.PathLike):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / LOCK_NAME
    self.created = False
    self._fd: int | None = None

  def __enter__(self) -> "WorkdirLock":
    self.created = not self.workdir.exists()
    fd = None
    try:
      try:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
      except OSError as e:
        raise UserError(f"--workdir {self.workdir}: cannot write there ({safe_write.reason(e)})") from None
      self._take(fd)
    except BaseException:
      if fd is not None:
        os.close(fd)
      if self.created:  # leave no folder behind for a run that never started
        shutil.rmtree(self.workdir, ignore_errors=True)
      raise
    self._fd = fd
    return self

  def _held_by(self, fd: int) -> UserError:
    try:
      holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except json.JSONDecodeError:
      holder = {}
    return UserError(
      f"--workdir {self.workdir}: in use by another training run ({_describe(holder)}); wait for it "
      "to finish or use another --workdir"
    )

  def _take(self, fd: int) -> None:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise self._held_by(fd) from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        raise UserError(f"{self.path}: cannot lock ({safe_write.reason(e)})") from None
      self._take_without_flock(fd)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError as e:
      raise UserError(f"{self.path}: cannot write ({safe_write.reason(e)})") from None

  def _take_without_flock(self, fd: int) -> None:
    """The lock file's content as the lock (file systems without flock)."""
    try:
      holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except json.JSONDecodeError:
      holder = {}
    if not holder or holder.get("pid") == os.getpid():
      return
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0))):
      return  # stale: its process is gone
    error = self._held_by(fd)
    raise UserError(f"{error}; if that run is gone, delete {self.path}") from None

  def __exit__(self, *exc) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # an empty lock file holds nothing, with or without flock
    except OSError:
      pass  # read-only or full by now: the flock still goes with the descriptor
    os.close(self._fd)  # releases the flock
    self._fd = None
