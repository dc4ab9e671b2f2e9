"""Course data files: real download URLs, SHA-256 checks, a local cache, and offline seeding.

Hand-written support code (not exported from a notebook).

    from helpers.support.data import fetch, gpt2_tokenizer
    path = fetch("the-verdict.txt")      # downloads once, verifies, then reads from the cache
    tokenizer = gpt2_tokenizer()         # tiktoken's GPT-2 encoding, working offline from the cache

The cache folder is ``$COURSE_DATA_DIR`` when set, otherwise ``data/`` in the course repository
(or ``~/.cache/llm-course`` when the package is installed without the repository). Offline
machines fill it with ``python -m helpers.support seed ../shared/data``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .download import DownloadError, download_file, sha256_of
from .files import copy_atomically, write_atomically

__all__ = ["COURSE_FILES", "cache_dir", "fetch", "gpt2_tokenizer", "seed_cache", "DownloadError", "SeedError"]

_RASBT = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
_OPENAI_ENC = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
_OPENAI_124M = "https://openaipublic.blob.core.windows.net/gpt-2/models/124M"


@dataclass(frozen=True)
class CourseFile:
    urls: tuple[str, ...]       # primary first, then backups
    sha256: str                 # of the file as the course uses it (after unzipping)
    member: str | None = None   # for zip downloads: the archive member that is the file


COURSE_FILES: dict[str, CourseFile] = {
    "the-verdict.txt": CourseFile(
        (f"{_RASBT}/ch02/01_main-chapter-code/the-verdict.txt",),
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"),
    "instruction-data.json": CourseFile(
        (f"{_RASBT}/ch07/01_main-chapter-code/instruction-data.json",),
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"),
    "gpt2/encoder.json": CourseFile(
        (f"{_OPENAI_ENC}/encoder.json", f"{_OPENAI_124M}/encoder.json"),
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "gpt2/vocab.bpe": CourseFile(
        (f"{_OPENAI_ENC}/vocab.bpe", f"{_OPENAI_124M}/vocab.bpe"),
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    "sms_spam_collection/SMSSpamCollection": CourseFile(
        ("https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
         "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip"),
        "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        member="SMSSpamCollection"),
}


def cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder course files are cached in (created if missing)."""
    if data_dir is None or data_dir == "":  # notebooks pass os.environ.get("COURSE_DATA_DIR") on
        data_dir = os.environ.get("COURSE_DATA_DIR") or None  # set but empty: unset, not the current folder
    if data_dir is None:
        repo = Path(__file__).resolve().parents[2]
        data_dir = repo / "data" if (repo / "pyproject.toml").exists() else Path.home() / ".cache" / "llm-course"
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_copy(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache's copy of course file `name` if it is the verified file (its SHA-256), else
    None; downloads nothing. `fetch` returns this copy when there is one."""
    if name not in COURSE_FILES:
        raise KeyError(f"unknown course file {name!r}; known: {', '.join(COURSE_FILES)}")
    dest = cache_dir(data_dir) / name
    return dest if dest.is_file() and sha256_of(dest) == COURSE_FILES[name].sha256 else None


def fetch(name: str, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Return the local path of course file `name`, downloading and verifying it if needed.

    A cached file whose SHA-256 does not match (corrupt, truncated, edited) is downloaded again.
    Offline, raises `DownloadError` naming the URLs and the path to place the file at by hand.
    """
    found = cached_copy(name, data_dir)
    if found is not None:
        return found
    spec = COURSE_FILES[name]
    dest = cache_dir(data_dir) / name
    if spec.member is None:
        return download_file(spec.urls, dest, sha256=spec.sha256, progress=progress)
    # Zip download: the archive's own hash is not published, so verify the extracted member.
    archive = dest.parent / (dest.parent.name + ".zip")
    try:
        download_file(spec.urls, archive, progress=progress)
    except DownloadError as e:
        raise DownloadError(f"{e}\n(or place the extracted file {spec.member} at {dest.resolve()})") from None

    def extract_and_check(out):
        if _extract_member(archive, spec.member, out) != spec.sha256:  # raised before the rename
            raise DownloadError(f"{spec.member} in {archive.name} does not have the expected SHA-256 "
                                f"{spec.sha256}; the archive was removed, try again")

    try:
        write_atomically(dest, extract_and_check)
    except DownloadError:
        archive.unlink(missing_ok=True)  # a damaged archive would otherwise be reused forever
        raise
    except OSError as e:  # e.g. a full disk: the archive is fine and stays for the next try
        raise OSError(e.errno, f"could not extract {spec.member} from {archive.name} into {dest.parent} "
                               f"({e.strerror or e}); nothing was left behind") from None
    return dest


# An archive is untrusted input: these bound what extracting it may write (the course's one zip,
# the SMS Spam Collection, holds 2 files and 0.5 MB).
MAX_ZIP_MEMBERS = 100
MAX_UNZIPPED_BYTES = 64 * 2**20


def _extract_member(archive: Path, member: str, out) -> str:
    """Write `member` of `archive` to the binary file `out`; return its SHA-256.

    Checks the member count and the declared size before writing anything, and stops writing
    past MAX_UNZIPPED_BYTES whatever the header declares (a "zip bomb"). A damaged archive raises
    DownloadError."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_MEMBERS:
                raise DownloadError(f"{archive.name} holds {len(infos):,} files (at most {MAX_ZIP_MEMBERS} "
                                    f"expected): not the course's archive; it was removed, try again")
            info = zf.getinfo(member)
            if info.file_size > MAX_UNZIPPED_BYTES:
                raise DownloadError(f"{member} in {archive.name} would unpack to {info.file_size:,} bytes (at most "
                                    f"{MAX_UNZIPPED_BYTES:,} expected): not the course's archive; it was removed, "
                                    f"try again")
            written = 0
            with zf.open(info) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    written += len(block)
                    if written > MAX_UNZIPPED_BYTES:
                        raise DownloadError(f"{member} in {archive.name} unpacks to more than its header says "
                                            f"and more than {MAX_UNZIPPED_BYTES:,} bytes: not the course's "
                                            f"archive; it was removed, try again")
                    digest.update(block)
                    out.write(block)
    except DownloadError:
        raise
    # zlib.error: damaged compressed data; NotImplementedError: an unknown compression method;
    # RuntimeError: an encrypted member. All mean: not the archive the course downloads.
    except (zipfile.BadZipFile, KeyError, EOFError, zipfile.LargeZipFile, zlib.error, NotImplementedError,
            RuntimeError) as e:
        raise DownloadError(f"{archive.name} is not a zip archive holding {member} ({e}); "
                            f"it was removed, try again") from None
    return digest.hexdigest()


def _tiktoken_key(url: str) -> str:
    # tiktoken names cached files by the SHA-1 of the URL it would download them from.
    return hashlib.sha1(url.encode()).hexdigest()


def gpt2_tokenizer(data_dir: str | os.PathLike | None = None):
    """tiktoken's GPT-2 encoding, built from the course cache so that it also works offline.

    Uses ``$TIKTOKEN_CACHE_DIR`` when set, else ``<course cache>/tiktoken``, and fills that from
    the course's verified copies of encoder.json and vocab.bpe (fetched if missing). When those
    cannot be had, tiktoken's own cache serves if it holds both files (where the book's
    ``tiktoken.get_encoding("gpt2")`` keeps them); else the DownloadError says what is missing.
    The environment is left as it was.
    """
    import tiktoken

    own = os.environ.get("TIKTOKEN_CACHE_DIR")
    # An empty TIKTOKEN_CACHE_DIR would make tiktoken skip its cache and go online: treat as unset.
    tk_dir = Path(own) if own else cache_dir(data_dir) / "tiktoken"
    keys = {name: _tiktoken_key(f"{_OPENAI_ENC}/{name}") for name in ("encoder.json", "vocab.bpe")}

    def verified(folder, name):  # tiktoken checks the same SHA-256 and would re-download anything else
        return (folder / keys[name]).is_file() and sha256_of(folder / keys[name]) == COURSE_FILES[f"gpt2/{name}"].sha256

    try:
        tk_dir.mkdir(parents=True, exist_ok=True)
        for name in keys:
            if not verified(tk_dir, name):
                copy_atomically(fetch(f"gpt2/{name}", data_dir), tk_dir / keys[name])
    except DownloadError:
        fallback = Path(os.environ.get("DATA_GYM_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")
        if own or not all(verified(fallback, name) for name in keys):  # a set TIKTOKEN_CACHE_DIR was tried above
            raise
        tk_dir = fallback
    # tiktoken reads the variable while it builds the encoding (once per process): set it for
    # that call only, so that other tiktoken encodings keep the user's own cache setting
    os.environ["TIKTOKEN_CACHE_DIR"] = str(tk_dir)
    try:
        return tiktoken.get_encoding("gpt2")
    finally:
        if own is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = own

class SeedError(ValueError):
    """`seed_cache` found files it could not use; the good ones were seeded all the same."""

    def __init__(self, message: str, done: list[Path], bad: list[str]):
        super().__init__(message)
        self.done, self.bad = done, bad


def seed_cache(source: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy course files from an offline folder (laid out like the cache, e.g. ../shared/data)
    into the cache, checking each SHA-256; returns the files copied or already present.

    Raises ValueError when `source` is not a folder, and SeedError (listing them) when some
    files there have the wrong SHA-256, after seeding every good one."""
    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"seed: {source} is not a folder; give the folder holding the course files "
                         f"(laid out like the cache, e.g. ../shared/data)")
    dest_root = cache_dir(data_dir)
    done, bad = [], []
    for name, spec in COURSE_FILES.items():
        src, dest = source / name, dest_root / name
        if cached_copy(name, dest_root) is not None:
            done.append(dest)
            continue
        if not src.exists():
            continue
        if sha256_of(src) != spec.sha256:
            bad.append(name)
            continue
        copy_atomically(src, dest)
        done.append(dest)
    if bad:
        raise SeedError(f"seed: {len(bad)} file(s) in {source} do not have the expected SHA-256 and were not "
                        f"copied: {', '.join(bad)}; the other {len(done)} are in {dest_root}. Replace them with "
                        f"good copies (or run `python -m helpers.support fetch` online)", done, bad)
    return done


def main(argv=None) -> int:
    """The command line; a user error is one or two lines on stderr and exit code 2."""
    import sys

    parser = argparse.ArgumentParser(prog="python -m helpers.support",
                                     description="Manage the course data cache.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed", help="fill the cache from an offline copy (e.g. ../shared/data)")
    s.add_argument("source")
    sub.add_parser("fetch", help="download every course file into the cache")
    sub.add_parser("where", help="print the cache folder")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "seed":
            files = seed_cache(args.source)
            missing = [n for n in COURSE_FILES if cache_dir() / n not in files]
            if missing and not any((Path(args.source) / n).exists() for n in COURSE_FILES):
                print(f"error: seed: {args.source} holds none of the course files ({', '.join(COURSE_FILES)}): "
                      f"give the folder that holds them, laid out like the cache (e.g. ../shared/data)",
                      file=sys.stderr)
                return 2
            print(f"{len(files)}/{len(COURSE_FILES)} course files in {cache_dir()}"
                  + (f"; not in {args.source}: {', '.join(missing)}" if missing else ""))
        elif args.cmd == "fetch":
            failed = []
            for name in COURSE_FILES:
                try:
                    print(fetch(name))
                except DownloadError as e:
                    reason = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
                    print(f"  {name}: not downloaded ({reason})", file=sys.stderr)
                    failed.append(name)
            if failed:
                print(f"error: {len(failed)} of {len(COURSE_FILES)} course files could not be downloaded (offline?); "
                      f"run again online, or fill the cache from a copy: python -m helpers.support seed DIR",
                      file=sys.stderr)
                return 2
        else:
            print(cache_dir())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable cache folder, a full disk, an unreadable source file
        where = Path(e.filename).absolute() if e.filename else None  # not resolved: the source may hold symlinks
        in_source = args.cmd == "seed" and where is not None and where.is_relative_to(Path(args.source).absolute())
        fix = ("make it readable or leave it out of the folder" if in_source
               else "set COURSE_DATA_DIR to a writable folder with free space")
        print(f"error: {str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}; {fix}", file=sys.stderr)
        return 2
    return 0
