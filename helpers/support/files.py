"""Replacing files a user would miss (checkpoints, caches, logs, results) without ever losing them.

Hand-written support code (not exported from a notebook); the chapters' savers call it.

    from helpers.support.files import copy_atomically, write_atomically, write_atomically_together
    write_atomically("runs/model.pth", lambda f: torch.save(state, f))
    write_atomically("answers.json", lambda f: json.dump(records, f), mode="w")
    copy_atomically("../shared/data/the-verdict.txt", "data/the-verdict.txt")
    write_atomically_together([(folder / "model.safetensors", write_weights, "wb"),
                               (folder / "config.json", write_config, "w")])

Each writes a temporary file of its own beside the target, flushes and fsyncs it, then renames
it over the target: a reader sees the old file or the new one, never a mix; an error (a full disk,
Ctrl-C) removes the temporary file and leaves the old file as it was; two writers never share a
temporary name.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

__all__ = ["write_atomically", "write_atomically_together", "copy_atomically", "check_writable"]


def write_atomically(path: str | os.PathLike, write, mode: str = "wb") -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    `mode` is "wb" (binary, the default) or "w" (UTF-8 text). The parent folder is created when
    missing. Returns `path` as a Path."""
    path = Path(path)
    _commit(_write_temporary(path, write, mode), path)
    return path


def write_atomically_together(writes) -> list[Path]:
    """`write_atomically` for files that only make sense together (a model's weights and its
    config): `writes` is a list of (path, write, mode). Every temporary file is written and
    fsynced before the first rename, so an error or Ctrl-C while writing leaves all the old
    files as they were; only the renames, done one right after the other, are not one step.
    Returns the paths."""
    writes = list(writes)
    paths, temporaries = [Path(path) for path, _, _ in writes], []
    try:
        for path, (_, write, mode) in zip(paths, writes):
            temporaries.append(_write_temporary(path, write, mode))
        for i, (tmp, path) in enumerate(zip(temporaries, paths)):
            os.replace(tmp, path)
            temporaries[i] = None
    except BaseException:
        for tmp in temporaries:
            if tmp is not None:
                with suppress(OSError):
                    os.unlink(tmp)
        raise
    for folder in dict.fromkeys(path.parent for path in paths):
        _sync_folder(folder)
    return paths


def _write_temporary(path: Path, write, mode: str) -> str:
    """A temporary file beside `path` holding what `write(file)` wrote, fsynced; its name."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r}: use 'wb' (binary) or 'w' (UTF-8 text)")
    _check_writable_path(path)
    mode_bits = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as f:  # from here on, closing f closes fd
            # mkstemp makes the file private (0600); the result should have the permissions
            # that open() would have given it, or those of the file it replaces.
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode_bits)
            else:  # Windows has no fchmod
                os.chmod(tmp, mode_bits)
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _check_writable_path(path: Path) -> None:
    """Refuse, before anything is written, a target that is a folder or lies below a file; then
    create its missing folders. (Otherwise the whole file, a checkpoint perhaps, would be written
    first and the rename fail with an error naming a temporary file.)"""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file: pass the path of a file to write "
                                f"(one inside that folder, for example); nothing was written")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the nearest part that exists
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder, so {path} cannot be created below it: "
                                 f"pass another path; nothing was written")
    path.parent.mkdir(parents=True, exist_ok=True)


def check_writable(path: str | os.PathLike, what: str = "the file") -> Path:
    """Check, before long work whose result goes to `path`, that it can be written there: not a
    folder, not below a file, and its folder takes a new file (a read-only folder or file system
    fails here, not after the work). Creates the missing folders; writes nothing else. Returns
    the path."""
    path = Path(path)
    _check_writable_path(path)
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write {what} {path} ({e.strerror or e}): pass a path in a folder "
                              f"you can write to; nothing was written") from None
    return path


def _commit(tmp: str, path: Path) -> None:
    """Rename the temporary file `tmp` over `path`, then make the rename itself durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # A rename survives a power cut only once the folder's entry is on disk too; some file
    # systems (and Windows) cannot open a folder, and there the rename is all we get.
    with suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _mode_for(path: Path) -> int:
    """The permission bits `path` keeps (when it exists) or would get from open() (umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


_PROC_STATUS = "/proc/self/status"


def _current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    os.umask can only read the mask by setting it, and the mask is process-wide: for that
    instant another thread's new file would get the temporary mask. Linux (4.7+) reports the
    mask in /proc/self/status, so the flip is only the fallback elsewhere.
    """
    with suppress(OSError, ValueError):
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o077)  # the strictest mask while it is flipped, not 0
    os.umask(umask)
    return umask


def copy_atomically(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the file `src` to `dest` the same way: `dest` is whole or as it was. Returns `dest`."""
    with open(src, "rb") as source:
        return write_atomically(dest, lambda out: shutil.copyfileobj(source, out))
