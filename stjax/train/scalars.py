"""TensorBoard scalars of a run (DIR/tensorboard/events.out.tfevents.*), written synchronously.

Each call of `ScalarWriter.write` appends one TFRecord-framed `Event` with one write; if that
fails (full disk, read-only folder) the file is cut back to its previous length and a UserError
names it, so there is no writer thread to die with a traceback and no torn record. A resumed run
opens a new event file whose first event purges steps after the checkpoint it resumed from (as
tensorboardX's `purge_step`).
"""

from __future__ import annotations

import os
import pathlib
import socket
import struct
import time

from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import masked_crc32c

from stjax.train import safe_write


def _record(event: Event) -> bytes:
  """One TFRecord: length, its masked CRC32C, the serialized event, its masked CRC32C."""
  data = event.SerializeToString()
  header = struct.pack("<Q", len(data))
  return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class ScalarWriter:
  """Appends scalars to a new event file in `logdir`; events at steps >= `purge_step` written by
  earlier event files are hidden by TensorBoard."""

  def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
    logdir = pathlib.Path(logdir)
    with safe_write.user_errors(logdir, "create the TensorBoard folder"):
      logdir.mkdir(parents=True, exist_ok=True)
    self._fd: int | None = None
    stem = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
    for n in range(1000):  # a new file, never one of an earlier run of this process
      self.path = logdir / (stem if n == 0 else f"{stem}.{n}")
      with safe_write.user_errors(self.path):
        try:
          self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
          break
        except FileExistsError:
          continue
    self._append(Event(wall_time=time.time(), file_version="brain.Event:2"))
    if purge_step is not None:
      self._append(
        Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START))
      )

  def _append(self, event: Event) -> None:
    record = _record(event)
    with safe_write.user_errors(self.path):
      size = os.lseek(self._fd, 0, os.SEEK_END)
      try:
        if os.write(self._fd, record) != len(record):
          raise OSError(28, os.strerror(28))  # a short write: the disk filled up mid-record
      except OSError:
        os.ftruncate(self._fd, size)
        raise

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """One event holding every scalar of `step`."""
    values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._append(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))

  def close(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None
