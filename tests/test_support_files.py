"""helpers.support.files: the one way the course replaces a file a user would miss."""
import json
import os
import pickle
import re
import stat
import threading

import pytest
import torch

from helpers.instruction import save_responses
from helpers.support.files import copy_atomically, write_atomically, write_atomically_together
from helpers.training import save_checkpoint


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_replaces_and_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    assert write_atomically(path, lambda f: f.write(b"one")) == path
    write_atomically(path, lambda f: f.write(b"two, longer"))
    assert path.read_bytes() == b"two, longer"
    assert leftovers(path.parent) == []


def test_text_mode_is_utf8_and_keeps_line_endings(tmp_path):
    path = tmp_path / "t.txt"
    write_atomically(path, lambda f: f.write("Grüße\r\nzwei\n"), mode="w")
    assert path.read_bytes() == "Grüße\r\nzwei\n".encode("utf-8")


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old contents")

    def half_then_fail(f):
        f.write(b"new contents, half of them")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old contents"
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_inside_the_writer_is_cleaned_up_too(tmp_path):
    path = tmp_path / "keep.bin"
    path.write_bytes(b"old")

    def interrupted(f):
        f.write(b"x" * 1000)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_bad_mode_is_refused_before_touching_anything(tmp_path):
    with pytest.raises(ValueError, match="mode='a'"):
        write_atomically(tmp_path / "x", lambda f: None, mode="a")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_never_mix(tmp_path):
    path = tmp_path / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(8)]

    def writer(data):
        for _ in range(5):
            write_atomically(path, lambda f: f.write(data))

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in payloads
    assert leftovers(tmp_path) == []


def test_copy_atomically(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 100)
    dest = tmp_path / "out" / "dest.bin"
    assert copy_atomically(src, dest) == dest
    assert dest.read_bytes() == src.read_bytes()
    dest.write_bytes(b"previous")
    with pytest.raises(FileNotFoundError):
        copy_atomically(tmp_path / "missing", dest)
    assert dest.read_bytes() == b"previous"


def test_save_checkpoint_that_fails_keeps_the_previous_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "model.pth"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError), match="lambda"):  # a lambda cannot be pickled
        save_checkpoint(path, model, epoch=2, callback=lambda: None)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]  # no temporary file left


def test_save_responses_that_fails_keeps_the_previous_file(tmp_path):
    path = tmp_path / "answers.json"
    save_responses([{"instruction": "a"}], ["first"], path)
    with pytest.raises(TypeError):
        save_responses([{"instruction": "a"}], [object()], path)  # not JSON
    assert json.loads(path.read_text()) == [{"instruction": "a", "model_response": "first"}]
    assert [p.name for p in tmp_path.iterdir()] == ["answers.json"]


def test_permissions_are_those_open_would_give_or_the_old_files(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = write_atomically(tmp_path / "fresh.json", lambda f: f.write("{}"), mode="w")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's private 0600
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        write_atomically(kept, lambda f: f.write(b"new"))
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.skipif(not os.path.isfile("/proc/self/status"), reason="reads the umask from /proc")
def test_umask_is_read_without_changing_it(tmp_path, monkeypatch):
    # os.umask sets the process-wide mask to read it: a thread creating a file in that instant
    # would get the wrong permissions. On Linux the mask is read from /proc instead.
    import helpers.support.files as files

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(files.os, "umask", lambda mask: pytest.fail("os.umask was called"))
        fresh = write_atomically(tmp_path / "fresh.bin", lambda f: f.write(b"x"))
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_umask_fallback_restores_the_mask(tmp_path, monkeypatch):
    import helpers.support.files as files

    monkeypatch.setattr(files, "_PROC_STATUS", str(tmp_path / "no-such-status"))
    old = os.umask(0o027)
    try:
        fresh = write_atomically(tmp_path / "fresh.bin", lambda f: f.write(b"x"))
        assert os.umask(0o027) == 0o027  # the flip put the mask back
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_failing_to_set_permissions_closes_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "log.json"
    target.write_text("old")
    temporaries = []

    def refuse(fd, mode):
        temporaries.append((fd, os.fstat(fd)))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(PermissionError):
        write_atomically(target, lambda f: f.write("new"), mode="w")
    [(fd, held)] = temporaries
    # mkstemp's descriptor was closed: the number is free, or (another thread reused it) names
    # another file. (Counting all open descriptors would also count other threads' files.)
    try:
        now = os.fstat(fd)
    except OSError:
        pass
    else:
        assert (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino), "the temporary is still open"
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_files_written_together_are_all_replaced_or_none(tmp_path):
    a, b = tmp_path / "weights.bin", tmp_path / "config.json"
    assert write_atomically_together([(a, lambda f: f.write(b"w1"), "wb"),
                                      (b, lambda f: f.write("c1"), "w")]) == [a, b]

    def fails(f):
        f.write("half a con")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        write_atomically_together([(a, lambda f: f.write(b"w2, all of it"), "wb"), (b, fails, "w")])
    assert (a.read_bytes(), b.read_text()) == (b"w1", "c1")  # the first file was written, not renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "weights.bin"]
    write_atomically_together([(a, lambda f: f.write(b"w3"), "wb"), (b, lambda f: f.write("c3"), "w")])
    assert (a.read_bytes(), b.read_text()) == (b"w3", "c3")


def test_files_written_together_accept_a_generator_of_writes(tmp_path):
    paths = [tmp_path / f"{i}.txt" for i in range(3)]
    write_atomically_together((p, (lambda f, i=i: f.write(str(i))), "w") for i, p in enumerate(paths))
    assert [p.read_text() for p in paths] == ["0", "1", "2"]


def test_a_folder_or_a_path_below_a_file_is_refused_before_anything_is_written(tmp_path):
    """Before, the whole file was written to a temporary beside the folder and the rename failed
    with "Is a directory: '.../.x.tmp' -> ...": an error naming a file the user never chose."""
    calls = []

    def write(f):
        calls.append(1)
        f.write(b"x")

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    with pytest.raises(IsADirectoryError, match="^" + re.escape(f"{folder} is a folder, not a file: ") + ".*nothing was written"):
        write_atomically(folder, write)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept too")
    for below in (a_file / "model.pth", a_file / "deeper" / "model.pth"):
        with pytest.raises(NotADirectoryError, match="^" + re.escape(f"{a_file} is a file, not a folder, so {below} cannot")):
            write_atomically(below, write)
        with pytest.raises(NotADirectoryError):
            write_atomically_together([(below, write, "wb")])
    assert calls == []  # refused before the writer ran
    assert (folder / "keep.txt").read_text() == "kept" and a_file.read_text() == "kept too"
    assert leftovers(tmp_path) == [] and leftovers(folder) == []
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):  # as the savers meet it
        save_responses([{"instruction": "a", "input": "", "output": "b"}], ["c"], folder)
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        save_checkpoint(folder, torch.nn.Linear(2, 2))
