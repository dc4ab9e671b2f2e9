"""Robust file downloads for the course (hand-written support code, not exported from a notebook).

One function, `download_file`, used for the course data and for OpenAI's GPT-2 checkpoints:

* streams with a tqdm progress bar and writes to ``<dest>.part``; the final name appears only
  when the file is complete (size matches Content-Length, SHA-256 matches when one is known);
* resumes a ``.part`` left by an interrupted run with an HTTP Range request, and starts over
  when the server ignores the range;
* retries each URL a few times, then falls back to the next (backup) URL;
* when every URL fails, raises `DownloadError` naming each URL, why it failed, and the path
  where the file can be placed by hand;
* a complete, verified file is never downloaded again; a cached copy whose SHA-256 no longer
  matches is replaced only once the new download has verified (offline, it stays as it was).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Sequence

import requests
from tqdm.auto import tqdm

__all__ = ["DownloadError", "download_file", "sha256_of"]

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A file could not be downloaded from any of its URLs."""


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download `url` into `part`, resuming from its current size; raise on any failure."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416 and have:  # range beyond the end: the .part is useless
            part.unlink()
            raise IOError("server refused to resume the partial file; starting over")
        r.raise_for_status()
        if have and r.status_code != 206:  # server ignored Range: start from scratch
            have = 0
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-5],
                                         disable=not progress, leave=False) as bar:
            for chunk in r.iter_content(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the real file
    size = part.stat().st_size
    if total is not None and size != total:
        raise IOError(f"incomplete download: got {size:,} of {total:,} bytes")


def download_file(url: str | Sequence[str], destination: Path | str, backup_url: str | None = None, *,
                  sha256: str | None = None, retries: int = 3, timeout: float = 30.0, backoff: float = 1.0,
                  progress: bool = True) -> Path:
    """Download the first URL that works into `destination` and return its path.

    The book's signature (`download_file(url, destination, backup_url=None)`), plus: `url` may
    also be a list of URLs tried in order (primary first, then backups); `backup_url` is tried
    last. If `destination` already exists and (when `sha256` is given) matches, nothing is
    downloaded.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if backup_url is not None:
        urls.append(backup_url)
    if not urls:
        raise ValueError("download_file: no URL given")
    # 0 retries made no attempt at all and then reported a failure that named no cause
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise ValueError(f"retries={retries!r} must be a whole number >= 1 (attempts per URL)")
    if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
        raise ValueError(f"timeout={timeout!r} must be a finite number of seconds > 0")
    if not (isinstance(backoff, (int, float)) and 0 <= backoff < float("inf")):
        raise ValueError(f"backoff={backoff!r} must be a finite number of seconds >= 0")
    dest = Path(destination)
    stale = False
    if dest.exists():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        # corrupt or from another version: fetch it again, but keep it until the new copy verifies
        stale = True
    new_folder = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    failures = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, timeout, progress)
                if sha256 is not None and (got := sha256_of(part)) != sha256:
                    part.unlink()
                    raise IOError(f"SHA-256 mismatch: expected {sha256}, got {got}")
                os.replace(part, dest)
                return dest
            except requests.HTTPError as e:
                failures.append(f"{url}: HTTP {e.response.status_code}")
                if e.response.status_code in (401, 403, 404, 410):
                    break  # retrying will not make it appear; go to the backup
            except (requests.RequestException, IOError) as e:
                failures.append(f"{url}: {type(e).__name__}: {e}")
            if attempt < retries:
                time.sleep(backoff * attempt)
    if new_folder and not any(dest.parent.iterdir()):  # an offline attempt leaves no empty folder behind
        dest.parent.rmdir()
    raise DownloadError(
        f"Could not download {dest.name}.\n  " + "\n  ".join(failures) +
        f"\nIf you are offline, download it on another machine from\n  {urls[0]}\n"
        f"and place it at\n  {dest.resolve()}"
        + (f"\n(expected SHA-256 {sha256})" if sha256 else "")
        + ("\nThe copy already there does not match that SHA-256; it was left as it was." if stale else ""))

