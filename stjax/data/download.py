"""Downloads with resume and checksum, and verification of local files.

A file is fetched into `<target>.part` with HTTP Range requests (an interrupted transfer resumes
where it stopped, on the next attempt or the next run), hashed, and renamed to its final name only
when its size and sha256 match the registry, so a final file with a recorded checksum is always
complete and verified. Set
`$STJAX_DOWNLOAD_MIRROR=https://host/path` to fetch `<mirror>/<dataset>/<file>` instead of the
registry URLs of the files that have one (for mirrors and tests).

A file with no recorded sha256 is never called verified: its size is checked when the registry
knows it, its first bytes must look like its format (so an error page or a stub is not kept), and
`verify` reports it as "unverified: no checksum recorded" and fails.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import sys
import urllib.error
import urllib.request

from tqdm import tqdm

from stjax.data import paths, registry
from stjax.errors import UserError

CHUNK = 1 << 16
# Leading bytes of the formats served without a checksum (HDF5 may start after a user block).
_SIGNATURES = {".h5": (b"\x89HDF\r\n\x1a\n", (0, 512, 1024, 2048, 4096)), ".npz": (b"PK\x03\x04", (0,))}


def sha256_file(path: str | pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def format_problem(path: str | pathlib.Path, suffix: str) -> str | None:
  """Why `path` cannot be a `suffix` file (too short, wrong leading bytes), or None. Not a checksum."""
  if suffix not in _SIGNATURES:
    return None
  magic, offsets = _SIGNATURES[suffix]
  with open(path, "rb") as f:
    head = f.read(max(offsets[-1] + len(magic), 16))
  if any(head[o : o + len(magic)] == magic for o in offsets):
    return None
  if len(head) < len(magic):
    return f"not a {suffix} file (only {len(head)} bytes)"
  return f"not a {suffix} file (it starts with {head[:16]!r})"


def _fetch_once(url: str, part: pathlib.Path, progress: bool, label: str) -> None:
  """One HTTP attempt, appending to `part` from its current size; raises on a short transfer."""
  have = part.stat().st_size if part.exists() else 0
  headers = {"User-Agent": "stjax-download/1"}
  if have:
    headers["Range"] = f"bytes={have}-"
  try:
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # nothing left to send: the .part is already whole
      return
    raise
  with response:
    if have and response.status != 206:  # server ignored the range: start over
      have = 0
    length = response.headers.get("Content-Length")
    total = have + int(length) if length is not None else None
    with (
      open(part, "ab" if have else "wb") as out,
      tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        desc=label,
        disable=not progress,
        file=sys.stderr,
        leave=False,
      ) as bar,
    ):
      received = have
      while True:
        block = response.read(CHUNK)
        if not block:
          break
        out.write(block)
        received += len(block)
        bar.update(len(block))
  if total is not None and received < total:
    raise ConnectionError(f"transfer interrupted at {received} of {total} bytes")


def download_file(
  url: str,
  dest: str | pathlib.Path,
  sha256: str | None = None,
  retries: int = 3,
  progress: bool = True,
  size: int | None = None,
) -> pathlib.Path:
  """Fetches `url` to `dest` (resuming `dest.part`), checks size and sha256, renames into place.

  Raises UserError when every attempt fails (the `.part` stays for the next run to resume), or the
  size or checksum does not match, or (no checksum given) the bytes are not `dest`'s format: then
  the `.part` is deleted and no `dest` is written.
  """
  dest = pathlib.Path(dest)
  paths.writable_folder(dest.parent)  # a read-only or looping data dir is said before any transfer
  part = dest.with_name(dest.name + ".part")
  error = None
  for _ in range(retries + 1):
    try:
      _fetch_once(url, part, progress, dest.name)
      error = None
      break
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
      error = e
      if isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500:
        break  # not found / forbidden: retrying will not help
  if isinstance(error, urllib.error.HTTPError) and 400 <= error.code < 500:
    raise UserError(f"{url}: download failed ({error})")
  if error is not None:
    kept = part.stat().st_size if part.exists() else 0
    raise UserError(
      f"{url}: download failed ({error}); {kept} bytes kept in {part}, run the command again to resume"
    )
  if size is not None and part.stat().st_size != size:
    got = part.stat().st_size
    part.unlink()
    raise UserError(f"{url}: size mismatch (expected {size} bytes, got {got}); the download was deleted")
  if sha256 is not None:
    got = sha256_file(part)
    if got != sha256:
      part.unlink()
      raise UserError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); the download was deleted")
  elif (problem := format_problem(part, dest.suffix.lower())) is not None:
    part.unlink()
    raise UserError(f"{url}: {problem}; the download was deleted (no checksum is recorded for it)")
  os.replace(part, dest)
  return dest


def _url(info: registry.DatasetInfo, f: registry.RemoteFile) -> str | None:
  mirror = os.environ.get("STJAX_DOWNLOAD_MIRROR")
  return f"{mirror.rstrip('/')}/{info.name}/{f.name}" if mirror and f.url else f.url


def download(name: str, progress: bool = True, log=print) -> dict[str, pathlib.Path]:
  """Fetches every missing file of dataset `name` into `registry.data_dir()/name`."""
  info = registry.get(name)
  found = registry.find_local(name)
  manual = []
  for f in info.files:
    if found[f.name] is not None:
      log(f"{f.name}: present at {found[f.name]}")
      continue
    url = _url(info, f)
    if url is None:
      manual.append(f)
      continue
    path = download_file(url, registry.local_path(info, f), f.sha256, progress=progress, size=f.size)
    log(f"{f.name}: downloaded to {path}" + ("" if f.sha256 else " (unverified: no checksum recorded)"))
  if manual:
    raise UserError(
      f"dataset {name}: {', '.join(f.name for f in manual)} have no public direct link; get "
      f"{manual[0].note} and put them in {registry.data_dir() / name}"
    )
  return registry.resolve(name)


def verify(name: str, log=print) -> None:
  """Re-hashes the local files of `name`; UserError on a missing, corrupt or unverifiable file.

  A file with no recorded sha256 is "unverified: no checksum recorded" (its size, when known, and its
  format's leading bytes are still checked; its sha256 is printed to compare with a trusted copy).
  """
  info = registry.get(name)
  found = registry.find_local(name)
  bad, unverified = [], []
  for f in info.files:
    path = found[f.name]
    if path is None:
      log(f"{f.name}: MISSING")
      bad.append(f.name)
      continue
    size = path.stat().st_size
    if f.size is not None and size != f.size:
      log(f"{f.name}: BAD size {size}, expected {f.size} ({path})")
      bad.append(f.name)
    elif f.sha256 is None:
      problem = format_problem(path, path.suffix.lower())
      if problem is not None:
        log(f"{f.name}: BAD, {problem} ({path})")
        bad.append(f.name)
      else:
        known = ", the registry's size" if f.size is not None else ""
        log(
          f"{f.name}: unverified: no checksum recorded ({path}, {size} bytes{known}, sha256 {sha256_file(path)})"
        )
        unverified.append(f.name)
    elif sha256_file(path) != f.sha256:
      log(f"{f.name}: BAD sha256 ({path})")
      bad.append(f.name)
    else:
      log(f"{f.name}: ok ({path})")
  problems = []
  if bad:
    problems.append(f"{len(bad)} file(s) missing or corrupt: {', '.join(bad)}")
  if unverified:
    problems.append(f"{len(unverified)} file(s) unverified, no checksum recorded: {', '.join(unverified)}")
  if problems:
    raise UserError(f"dataset {name}: {'; '.join(problems)}")
