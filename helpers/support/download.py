"""Robust file downloads for the course (hand-written support code, not exported from a notebook).

One function, `download_file`, used for the course data and for OpenAI's GPT-2 checkpoints:

* streams with a tqdm progress bar and writes to ``<dest>.part``; the final name appears only
  when the file is complete (size matches Content-Length, SHA-256 matches when one is known);
* resumes a ``.part`` left by an interrupted run with an HTTP Range request, only from the URL
  that wrote it and only if the file has not changed there (If-Range), and starts over when the
  server ignores the range;
* asks for the bytes as they are (no gzip), so the size check means what it says;
* a disk that is full or not writable is reported as such at once (`LocalWriteError`), not
  retried as if the network had failed;
* retries each URL a few times, then falls back to the next (backup) URL;
* when every URL fails, raises `DownloadError` naming each URL, why it failed, and the path
  where the file can be placed by hand;
* a complete, verified file is never downloaded again; a cached copy whose SHA-256 no longer
  matches is replaced only once the new download has verified (offline, it stays as it was).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence

import requests
from tqdm.auto import tqdm

__all__ = ["DownloadError", "LocalWriteError", "download_file", "sha256_of"]

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A file could not be downloaded from any of its URLs."""


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Retry(IOError):
    """This attempt failed in a way another attempt may not (short body, wrong bytes, a range
    the server would not or could not resume): try again, or try the next URL."""


class LocalWriteError(OSError):
    """The partial file could not be written here (disk full, no permission): no retry helps."""


def _origin_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_origin(part: Path) -> dict | None:
    try:
        origin = json.loads(_origin_path(part).read_text())
        return origin if isinstance(origin, dict) else None
    except (OSError, ValueError):
        return None


def _discard(part: Path) -> None:
    """Remove a partial file that cannot be resumed, with the record of where it came from."""
    part.unlink(missing_ok=True)
    _origin_path(part).unlink(missing_ok=True)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header, or None."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", content_range or "")
    return int(match.group(1)) if match else None


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download `url` into `part`, resuming from its current size; raise on any failure.

    A `.part` is resumed only from the URL that wrote it (recorded beside it in `.part.json`,
    with the server's ETag or Last-Modified, sent as If-Range so that a file that changed on the
    server comes whole): bytes from two sources are never spliced together."""
    have = part.stat().st_size if part.exists() else 0
    origin = _read_origin(part) if have else None
    if have and origin is not None and origin.get("url") != url:
        have = 0  # another URL's partial file: start over rather than splice
    # identity: the size check below compares Content-Length with the bytes written, and a
    # gzip-encoded reply's Content-Length counts the compressed bytes
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        etag, modified = (origin or {}).get("etag"), (origin or {}).get("last_modified")
        validator = etag if etag and not etag.startswith("W/") else modified  # If-Range takes no weak ETag
        if validator:
            headers["If-Range"] = validator
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416 and have:  # range beyond the end: the .part is useless
            _discard(part)
            raise _Retry("server refused to resume the partial file; starting over")
        r.raise_for_status()
        if have and r.status_code == 206 and _range_start(r.headers.get("Content-Range")) != have:
            _discard(part)
            raise _Retry(f"server resumed at {r.headers.get('Content-Range')!r}, not at byte {have:,}; "
                         "starting over")
        if have and r.status_code != 206:  # server ignored Range (or the file changed): start from scratch
            have = 0
        length = r.headers.get("Content-Length")
        encoded = r.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        total = have + int(length) if length is not None and not encoded else None
        try:
            _origin_path(part).write_text(json.dumps({"url": url, "etag": r.headers.get("ETag"),
                                                      "last_modified": r.headers.get("Last-Modified")}))
            with open(part, "ab" if have else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=part.name[:-5], disable=not progress, leave=False) as bar:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the real file
        except requests.RequestException:
            raise
        except OSError as e:
            raise LocalWriteError(e.errno, f"cannot write {part}: {e.strerror or e}; free some disk space or "
                                  "fix the folder's permissions, then try again (the download resumes)") from e
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retry(f"incomplete download: got {size:,} of {total:,} bytes")


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
                    _discard(part)
                    raise _Retry(f"SHA-256 mismatch: expected {sha256}, got {got}")
                os.replace(part, dest)
                _origin_path(part).unlink(missing_ok=True)
                return dest
            except requests.HTTPError as e:
                failures.append(f"{url}: HTTP {e.response.status_code}")
                if e.response.status_code in (401, 403, 404, 410):
                    break  # retrying will not make it appear; go to the backup
            except _Retry as e:
                failures.append(f"{url}: {e}")
            except requests.RequestException as e:  # a LocalWriteError is not the network's fault: not caught
                failures.append(f"{url}: {type(e).__name__}: {e}")
            if attempt < retries:
                time.sleep(backoff * attempt)
    if not part.exists():  # nothing to resume: no record of where it came from either
        _origin_path(part).unlink(missing_ok=True)
    if new_folder and not any(dest.parent.iterdir()):  # an offline attempt leaves no empty folder behind
        dest.parent.rmdir()
    raise DownloadError(
        f"Could not download {dest.name}.\n  " + "\n  ".join(failures) +
        f"\nIf you are offline, download it on another machine from\n  {urls[0]}\n"
        f"and place it at\n  {dest.resolve()}"
        + (f"\n(expected SHA-256 {sha256})" if sha256 else "")
        + ("\nThe copy already there does not match that SHA-256; it was left as it was." if stale else ""))

