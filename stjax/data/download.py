"""Downloads with resume and checksum, and verification of local files.

A file is fetched into `<target>.part` with HTTP Range requests (an interrupted transfer resumes
where it stopped, on the next attempt or the next run), hashed, and renamed to its final name only
when the sha256 matches, so a final file is always complete and verified. Set
`$STJAX_DOWNLOAD_MIRROR=https://host/path` to fetch `<mirror>/<dataset>/<file>` instead of the
registry URLs of the files that have one (for mirrors and tests).
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

from stjax.data import registry
from stjax.errors import UserError

CHUNK = 1 << 16


def sha256_file(path: str | pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


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
    with open(part, "ab" if have else "wb") as out, tqdm(
        total=total, initial=have, unit="B", unit_scale=True, desc=label, disable=not progress, file=sys.stderr,
        leave=False) as bar:
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


def download_file(url: str, dest: str | pathlib.Path, sha256: str | None = None, retries: int = 3,
                  progress: bool = True) -> pathlib.Path:
  """Fetches `url` to `dest` (resuming `dest.part`), verifies sha256, renames into place.

  Raises UserError when every attempt fails (the `.part` stays for the next run to resume) or the
  checksum does not match (the `.part` is deleted and no `dest` is written).
  """
  dest = pathlib.Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
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
    raise UserError(f"{url}: download failed ({error}); {kept} bytes kept in {part}, run the command again to resume")
  if sha256 is not None:
    got = sha256_file(part)
    if got != sha256:
      part.unlink()
      raise UserError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); the download was deleted")
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
    path = download_file(url, registry.local_path(info, f), f.sha256, progress=progress)
    log(f"{f.name}: downloaded to {path}" + ("" if f.sha256 else " (no published sha256 to check)"))
  if manual:
    raise UserError(f"dataset {name}: {', '.join(f.name for f in manual)} have no public direct link; get "
                    f"{manual[0].note} and put them in {registry.data_dir() / name}")
  return registry.resolve(name)


def verify(name: str, log=print) -> None:
  """Re-hashes the local files of `name`; UserError on a missing file or a mismatch."""
  info = registry.get(name)
  bad = []
  for f in info.files:
    path = registry.find_local(name)[f.name]
    if path is None:
      log(f"{f.name}: MISSING")
      bad.append(f.name)
      continue
    if f.size is not None and path.stat().st_size != f.size:
      log(f"{f.name}: BAD size {path.stat().st_size}, expected {f.size} ({path})")
      bad.append(f.name)
    elif f.sha256 is None:
      log(f"{f.name}: present, no published sha256 ({path}, sha256 {sha256_file(path)})")
    elif sha256_file(path) != f.sha256:
      log(f"{f.name}: BAD sha256 ({path})")
      bad.append(f.name)
    else:
      log(f"{f.name}: ok ({path})")
  if bad:
    raise UserError(f"dataset {name}: {len(bad)} file(s) missing or corrupt: {', '.join(bad)}")
