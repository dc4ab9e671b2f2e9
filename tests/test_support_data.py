"""helpers.support.data and helpers.support.download, against a local HTTP server.

A loopback `http.server` in a thread stands in for the real hosts: it serves the course files
from the test cache, honours (or, when asked, ignores) HTTP Range requests, and records every
request, so resuming, retries and backup URLs can be checked without any network.
"""
import dataclasses
import errno
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.support import data, download
from helpers.support.data import COURSE_FILES, fetch, seed_cache
from helpers.support.download import DownloadError, download_file, sha256_of

ROOT = Path(__file__).resolve().parent.parent
README_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
README_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114,
              286, 617, 34680, 27271, 13]


class FileServer:
    """Serves `files` ({url path: bytes}) on 127.0.0.1; 404 for anything else."""

    def __init__(self, files, honour_range=True, etag=None, range_start=None):
        self.files, self.honour_range, self.requests = dict(files), honour_range, []
        self.etag, self.range_start, self.headers_seen = etag, range_start, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                server.headers_seen.append(dict(self.headers))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and if_range is not None and if_range != server.etag:
                    rng = None  # the file changed since the partial copy: send it whole (RFC 9110)
                if rng and server.range_start is not None:  # a broken server: 206 from the wrong byte
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {server.range_start}-{len(body) - 1}/{len(body)}")
                    body = body[server.range_start:]
                elif rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                if server.etag:
                    self.send_header("ETag", server.etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def verdict_bytes(data_dir):
    return (data_dir / "the-verdict.txt").read_bytes()


@pytest.fixture
def server(verdict_bytes):
    srv = FileServer({"/the-verdict.txt": verdict_bytes, "/backup/the-verdict.txt": verdict_bytes})
    yield srv
    srv.close()


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(download.time, "sleep", lambda s: None)


def point_at(monkeypatch, name, *urls):
    monkeypatch.setitem(COURSE_FILES, name, dataclasses.replace(COURSE_FILES[name], urls=tuple(urls)))


# ---- fetch ------------------------------------------------------------------------------------

def test_fetch_reads_the_seeded_cache_without_downloading(data_dir, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("fetch downloaded a file that the cache already holds")
    monkeypatch.setattr(data, "download_file", refuse)
    path = fetch("the-verdict.txt", data_dir)
    assert path == data_dir / "the-verdict.txt"
    assert sha256_of(path) == COURSE_FILES["the-verdict.txt"].sha256
    assert len(path.read_text(encoding="utf-8")) == 20479


def test_cached_copy_is_the_verified_file_or_none_and_downloads_nothing(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(download, "download_file", lambda *a, **k: pytest.fail("cached_copy downloaded"))
    monkeypatch.setattr(data, "download_file", lambda *a, **k: pytest.fail("cached_copy downloaded"))
    assert data.cached_copy("the-verdict.txt", data_dir) == data_dir / "the-verdict.txt"
    assert data.cached_copy("the-verdict.txt", tmp_path) is None  # not there
    (tmp_path / "the-verdict.txt").write_bytes((data_dir / "the-verdict.txt").read_bytes()[:-1])
    assert data.cached_copy("the-verdict.txt", tmp_path) is None  # there, but one byte short
    shutil.copyfile(data_dir / "the-verdict.txt", tmp_path / "the-verdict.txt")
    assert data.cached_copy("the-verdict.txt", tmp_path) == tmp_path / "the-verdict.txt"
    assert fetch("the-verdict.txt", tmp_path) == tmp_path / "the-verdict.txt"  # fetch returns that copy
    with pytest.raises(KeyError, match="unknown course file"):
        data.cached_copy("no-such-file.txt", tmp_path)


def test_fetch_unknown_name():
    with pytest.raises(KeyError, match="the-verdict.txt"):
        fetch("no-such-file.txt")


def test_corrupt_cached_file_is_detected_and_fetched_again(tmp_path, server, monkeypatch, verdict_bytes):
    point_at(monkeypatch, "the-verdict.txt", server.url + "/the-verdict.txt")
    cached = tmp_path / "the-verdict.txt"
    cached.write_bytes(verdict_bytes[:-10] + b"corrupted!")  # same size, wrong content
    assert fetch("the-verdict.txt", tmp_path, progress=False) == cached
    assert cached.read_bytes() == verdict_bytes
    assert server.requests == [("/the-verdict.txt", None)]
    assert not (tmp_path / "the-verdict.txt.part").exists()


def test_partial_download_resumes_with_a_range_request(tmp_path, server, monkeypatch, verdict_bytes):
    point_at(monkeypatch, "the-verdict.txt", server.url + "/the-verdict.txt")
    (tmp_path / "the-verdict.txt.part").write_bytes(verdict_bytes[:5000])
    path = fetch("the-verdict.txt", tmp_path, progress=False)
    assert path.read_bytes() == verdict_bytes
    assert server.requests == [("/the-verdict.txt", "bytes=5000-")]
    assert not (tmp_path / "the-verdict.txt.part").exists()


def test_server_ignoring_range_restarts_from_scratch(tmp_path, verdict_bytes):
    srv = FileServer({"/f": verdict_bytes}, honour_range=False)
    try:
        (tmp_path / "f.txt.part").write_bytes(verdict_bytes[:5000])
        download_file(srv.url + "/f", tmp_path / "f.txt", sha256=COURSE_FILES["the-verdict.txt"].sha256,
                      progress=False)
        assert (tmp_path / "f.txt").read_bytes() == verdict_bytes  # not 5000 bytes twice
        assert srv.requests == [("/f", "bytes=5000-")]
    finally:
        srv.close()


def test_corrupt_partial_file_is_discarded_and_retried(tmp_path, server, verdict_bytes, no_sleep):
    (tmp_path / "v.txt.part").write_bytes(b"x" * 5000)  # wrong bytes: resuming gives a bad hash
    dest = download_file(server.url + "/the-verdict.txt", tmp_path / "v.txt",
                         sha256=COURSE_FILES["the-verdict.txt"].sha256, progress=False)
    assert dest.read_bytes() == verdict_bytes
    assert server.requests == [("/the-verdict.txt", "bytes=5000-"), ("/the-verdict.txt", None)]


def test_complete_partial_file_is_restarted_after_416(tmp_path, server, verdict_bytes, no_sleep):
    (tmp_path / "v.txt.part").write_bytes(verdict_bytes)  # interrupted just before the rename
    dest = download_file(server.url + "/the-verdict.txt", tmp_path / "v.txt", progress=False)
    assert dest.read_bytes() == verdict_bytes
    # it asked to resume, the server answered 416 (nothing left to send), and it started over
    assert server.requests == [("/the-verdict.txt", f"bytes={len(verdict_bytes)}-"), ("/the-verdict.txt", None)]


def test_partial_file_is_resumed_only_from_the_url_that_wrote_it(tmp_path, server, verdict_bytes, no_sleep):
    # the primary URL wrote half the file and then vanished: the backup must not continue it
    dest = tmp_path / "v.txt"
    part = tmp_path / "v.txt.part"
    part.write_bytes(b"x" * 5000)
    (tmp_path / "v.txt.part.json").write_text(json.dumps({"url": server.url + "/gone/the-verdict.txt"}))
    download_file([server.url + "/gone/the-verdict.txt", server.url + "/backup/the-verdict.txt"], dest,
                  progress=False)  # no SHA-256: only the origin check keeps the x's out
    assert dest.read_bytes() == verdict_bytes
    assert server.requests == [("/gone/the-verdict.txt", "bytes=5000-"), ("/backup/the-verdict.txt", None)]
    assert not part.exists() and not (tmp_path / "v.txt.part.json").exists()


def test_partial_file_of_a_file_that_changed_on_the_server_comes_whole(tmp_path, verdict_bytes):
    srv = FileServer({"/f": verdict_bytes}, etag='"v2"')
    try:
        url = srv.url + "/f"
        (tmp_path / "f.txt.part").write_bytes(b"old version " * 100)
        (tmp_path / "f.txt.part.json").write_text(json.dumps({"url": url, "etag": '"v1"'}))
        assert download_file(url, tmp_path / "f.txt", progress=False).read_bytes() == verdict_bytes
        assert srv.requests == [("/f", "bytes=1200-")] and srv.headers_seen[0]["If-Range"] == '"v1"'
    finally:
        srv.close()


def test_a_206_from_the_wrong_byte_is_not_appended(tmp_path, verdict_bytes, no_sleep):
    srv = FileServer({"/f": verdict_bytes}, range_start=0)
    try:
        (tmp_path / "f.txt.part").write_bytes(verdict_bytes[:5000])
        assert download_file(srv.url + "/f", tmp_path / "f.txt", progress=False).read_bytes() == verdict_bytes
        assert srv.requests == [("/f", "bytes=5000-"), ("/f", None)]  # refused the splice, then started over
    finally:
        srv.close()


def test_asks_for_the_bytes_unencoded(tmp_path, server):
    # requests asks for gzip by default and unzips it, which would make Content-Length (the
    # compressed size) disagree with the bytes written on every attempt
    download_file(server.url + "/the-verdict.txt", tmp_path / "v.txt", progress=False)
    assert server.headers_seen[0]["Accept-Encoding"] == "identity"


def test_a_full_disk_is_reported_at_once_not_retried_as_offline(tmp_path, server, monkeypatch):
    real_open = open

    def full_disk(path, *args, **kwargs):
        if str(path).endswith(".part"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(download, "open", full_disk, raising=False)
    with pytest.raises(download.LocalWriteError, match=r"v\.txt\.part: No space left on device; free some disk space"):
        download_file(server.url + "/the-verdict.txt", tmp_path / "v.txt", progress=False)
    assert len(server.requests) == 1 and not (tmp_path / "v.txt").exists()


def test_missing_file_goes_to_the_backup_url_without_retrying(tmp_path, server, monkeypatch, verdict_bytes, no_sleep):
    point_at(monkeypatch, "the-verdict.txt", server.url + "/gone/the-verdict.txt",
             server.url + "/backup/the-verdict.txt")
    assert fetch("the-verdict.txt", tmp_path, progress=False).read_bytes() == verdict_bytes
    assert [p for p, _ in server.requests] == ["/gone/the-verdict.txt", "/backup/the-verdict.txt"]


def test_refused_connection_gives_one_clear_error(tmp_path, monkeypatch, no_sleep, refused_port):
    url = f"http://127.0.0.1:{refused_port}/the-verdict.txt"
    point_at(monkeypatch, "the-verdict.txt", url)
    with pytest.raises(DownloadError) as info:
        fetch("the-verdict.txt", tmp_path, progress=False)
    msg = str(info.value)
    assert url in msg
    assert str((tmp_path / "the-verdict.txt").resolve()) in msg
    assert "place it at" in msg and COURSE_FILES["the-verdict.txt"].sha256 in msg
    assert not (tmp_path / "the-verdict.txt").exists()


def test_failed_download_leaves_no_empty_folder_but_keeps_what_was_there(tmp_path, no_sleep, refused_port):
    # e.g. models/124M after an offline attempt to fetch GPT-2: the folder is made for the file,
    # so it goes again when nothing came; a folder that existed or holds a partial file stays
    url = f"http://127.0.0.1:{refused_port}/model.bin"
    with pytest.raises(DownloadError):
        download_file(url, tmp_path / "models" / "124M" / "model.bin", retries=1, progress=False)
    assert not (tmp_path / "models" / "124M").exists() and (tmp_path / "models").is_dir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model.bin.part").write_bytes(b"first half")
    for folder in ("kept", "partial"):
        with pytest.raises(DownloadError):
            download_file(url, tmp_path / folder / "model.bin", retries=1, progress=False)
        assert (tmp_path / folder).is_dir()
    assert (tmp_path / "partial" / "model.bin.part").read_bytes() == b"first half"


def test_zip_member_is_extracted_and_verified(tmp_path, data_dir, monkeypatch):
    name = "sms_spam_collection/SMSSpamCollection"
    content = (data_dir / name).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme", "about the data")
        zf.writestr("SMSSpamCollection", content)
    srv = FileServer({"/sms.zip": buf.getvalue()})
    old_umask = os.umask(0o022)
    try:
        point_at(monkeypatch, name, srv.url + "/sms.zip")
        path = fetch(name, tmp_path, progress=False)
        assert path == tmp_path / name and path.read_bytes() == content
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # what open() gives, not a temp file's 0600
        assert sorted(p.name for p in path.parent.iterdir()) == ["SMSSpamCollection", "sms_spam_collection.zip"]
    finally:
        os.umask(old_umask)
        srv.close()


def test_zip_with_damaged_compressed_data_is_removed_with_a_clear_error(tmp_path, data_dir, monkeypatch, refused_port):
    # the central directory is fine, the deflate stream is not: zipfile raises zlib.error
    name = "sms_spam_collection/SMSSpamCollection"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("SMSSpamCollection", (data_dir / name).read_bytes())
    damaged = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(damaged))).getinfo("SMSSpamCollection")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    damaged[start:start + 16] = b"\xff" * 16
    archive = tmp_path / "sms_spam_collection" / "sms_spam_collection.zip"
    archive.parent.mkdir()
    archive.write_bytes(bytes(damaged))
    point_at(monkeypatch, name, f"http://127.0.0.1:{refused_port}/sms.zip")
    with pytest.raises(DownloadError, match="removed, try again"):
        fetch(name, tmp_path, progress=False)
    assert not archive.exists() and not (tmp_path / name).exists()


def test_damaged_zip_archive_is_removed_then_downloaded_again(tmp_path, data_dir, monkeypatch, refused_port):
    name = "sms_spam_collection/SMSSpamCollection"
    archive = tmp_path / "sms_spam_collection" / "sms_spam_collection.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"not a zip")  # e.g. an HTML error page saved by an earlier run
    point_at(monkeypatch, name, f"http://127.0.0.1:{refused_port}/sms.zip")
    with pytest.raises(DownloadError, match="removed, try again"):
        fetch(name, tmp_path, progress=False)
    assert not archive.exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SMSSpamCollection", (data_dir / name).read_bytes())
    srv = FileServer({"/sms.zip": buf.getvalue()})
    try:
        point_at(monkeypatch, name, srv.url + "/sms.zip")
        assert fetch(name, tmp_path, progress=False).read_bytes() == (data_dir / name).read_bytes()
    finally:
        srv.close()


# ---- gpt2_tokenizer -----------------------------------------------------------------------------

def _tokenizer_in_fresh_process(data_dir, tk_dir):
    """tiktoken keeps loaded encodings per process, so each check runs in its own interpreter."""
    code = ("import json; from helpers.support.data import gpt2_tokenizer; "
            f"t = gpt2_tokenizer(); print(json.dumps(t.encode({README_TEXT!r}, allowed_special={{'<|endoftext|>'}})))")
    env = {**os.environ, "COURSE_DATA_DIR": str(data_dir), "TIKTOKEN_CACHE_DIR": str(tk_dir),
           "PYTHONPATH": str(ROOT), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tk_dir.parent if tk_dir else data_dir)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_gpt2_tokenizer_fills_an_empty_tiktoken_cache_from_the_course_cache(data_dir, tmp_path):
    tk_dir = tmp_path / "tiktoken"
    assert f"{README_IDS}" in _tokenizer_in_fresh_process(data_dir, tk_dir)
    assert len(list(tk_dir.iterdir())) == 2


def test_gpt2_tokenizer_treats_an_empty_cache_setting_as_unset(data_dir, tmp_path):
    # TIKTOKEN_CACHE_DIR="" turns tiktoken's cache off (it would go online): use the course's.
    course = tmp_path / "course"
    course.mkdir()
    for name in ("gpt2/encoder.json", "gpt2/vocab.bpe"):
        (course / "gpt2").mkdir(exist_ok=True)
        (course / name).write_bytes((data_dir / name).read_bytes())
    assert f"{README_IDS}" in _tokenizer_in_fresh_process(course, "")
    assert len(list((course / "tiktoken").iterdir())) == 2


def test_gpt2_tokenizer_replaces_a_corrupt_tiktoken_cache_file(data_dir, tmp_path):
    tk_dir = tmp_path / "tiktoken"
    _tokenizer_in_fresh_process(data_dir, tk_dir)
    for f in tk_dir.iterdir():
        f.write_bytes(b"truncated")
    assert f"{README_IDS}" in _tokenizer_in_fresh_process(data_dir, tk_dir)



def _tokenizer_env_check(course, **env):
    """gpt2_tokenizer in a fresh interpreter, offline, with `env` (None: unset); its IDs for
    README_TEXT and TIKTOKEN_CACHE_DIR as it is afterwards, or the error it raised."""
    code = ("import json, os, time; from helpers.support.data import gpt2_tokenizer\n"
            "time.sleep = lambda seconds: None\n"  # the failing downloads' back-off, as no_sleep does
            "try:\n    t = gpt2_tokenizer()\nexcept Exception as e:\n"
            "    print(json.dumps([type(e).__name__, str(e)])); raise SystemExit\n"
            f"print(json.dumps([t.encode({README_TEXT!r}, allowed_special={{'<|endoftext|>'}}), "
            "os.environ.get('TIKTOKEN_CACHE_DIR')]))")
    full = {**os.environ, "COURSE_DATA_DIR": str(course), "PYTHONPATH": str(ROOT),
            "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    for key in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        full.pop(key, None)
    full.update({k: v for k, v in env.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _gpt2_files(data_dir, folder, names=("encoder.json", "vocab.bpe")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        key = data._tiktoken_key(f"{data._OPENAI_ENC}/{name}")
        (folder / key).write_bytes((data_dir / "gpt2" / name).read_bytes())


def test_gpt2_tokenizer_leaves_the_environment_as_it_was(data_dir, tmp_path):
    course = tmp_path / "course"
    shutil.copytree(data_dir / "gpt2", course / "gpt2")
    ids, after = _tokenizer_env_check(course)
    assert ids == README_IDS and after is None  # tiktoken's other encodings keep their own cache
    assert len(list((course / "tiktoken").iterdir())) == 2


def test_gpt2_tokenizer_falls_back_on_tiktokens_own_cache_offline(data_dir, tmp_path):
    """No course copy and no network, but tiktoken's cache holds the files (the book's
    `tiktoken.get_encoding("gpt2")` would work): so does ours. With one file missing there, the
    course's DownloadError."""
    empty = tmp_path / "course"
    empty.mkdir()
    gym = tmp_path / "data-gym"
    _gpt2_files(data_dir, gym)
    ids, after = _tokenizer_env_check(empty, DATA_GYM_CACHE_DIR=str(gym))
    assert ids == README_IDS and after is None
    (gym / data._tiktoken_key(f"{data._OPENAI_ENC}/vocab.bpe")).unlink()
    kind, message = _tokenizer_env_check(empty, DATA_GYM_CACHE_DIR=str(gym))
    assert kind == "DownloadError" and "encoder.json" in message, message

# ---- faults: nothing lost, clear errors ---------------------------------------------------------

def test_offline_fetch_keeps_a_cached_file_that_no_longer_matches(tmp_path, monkeypatch, no_sleep, verdict_bytes, refused_port):
    point_at(monkeypatch, "the-verdict.txt", f"http://127.0.0.1:{refused_port}/the-verdict.txt")
    cached = tmp_path / "the-verdict.txt"
    cached.write_bytes(verdict_bytes + b"\nan edit by hand")  # the reader's only copy
    with pytest.raises(DownloadError, match="left as it was"):
        fetch("the-verdict.txt", tmp_path, progress=False)
    assert cached.read_bytes() == verdict_bytes + b"\nan edit by hand"


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


@pytest.mark.parametrize("limit,members,message", [
    ("MAX_UNZIPPED_BYTES", {"SMSSpamCollection": b"\0" * 2_000_000}, "would unpack to 2,000,000 bytes"),
    ("MAX_ZIP_MEMBERS", {f"f{i}": b"x" for i in range(200)} | {"SMSSpamCollection": b"x"}, "holds 201 files")])
def test_untrusted_archive_is_bounded_before_anything_is_written(tmp_path, monkeypatch, limit, members, message):
    name = "sms_spam_collection/SMSSpamCollection"
    monkeypatch.setattr(data, "MAX_UNZIPPED_BYTES", 1_000_000)  # the real bound is 64 MiB; same check
    srv = FileServer({"/sms.zip": _zip(members)})
    try:
        point_at(monkeypatch, name, srv.url + "/sms.zip")
        with pytest.raises(DownloadError, match=message):
            fetch(name, tmp_path, progress=False)
    finally:
        srv.close()
    assert list((tmp_path / "sms_spam_collection").iterdir()) == []  # no archive, no temp file, no member


def test_archive_whose_member_outgrows_its_header_is_refused(tmp_path, monkeypatch):
    name = "sms_spam_collection/SMSSpamCollection"
    monkeypatch.setattr(data, "MAX_UNZIPPED_BYTES", 1_000_000)
    archive = tmp_path / "sms_spam_collection" / "sms_spam_collection.zip"
    archive.parent.mkdir()
    archive.write_bytes(_zip({"SMSSpamCollection": b"\0" * 3_000_000}))
    real_getinfo = zipfile.ZipFile.getinfo

    def lying_header(self, member):  # what a crafted archive declares
        info = real_getinfo(self, member)
        info.file_size = 100
        return info

    monkeypatch.setattr(zipfile.ZipFile, "getinfo", lying_header)
    # zipfile stops at the declared size and fails the CRC; extraction also counts the bytes it writes
    with pytest.raises(DownloadError, match="(Bad CRC|unpacks to more than its header says).*removed, try again"):
        fetch(name, tmp_path, progress=False)
    assert list(archive.parent.iterdir()) == []


def test_full_disk_while_extracting_leaves_no_temp_file(tmp_path, data_dir, monkeypatch):
    name = "sms_spam_collection/SMSSpamCollection"
    archive = tmp_path / "sms_spam_collection" / "sms_spam_collection.zip"
    archive.parent.mkdir()
    archive.write_bytes(_zip({"SMSSpamCollection": (data_dir / name).read_bytes()}))

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.os, "fsync", no_space)
    with pytest.raises(OSError, match="could not extract SMSSpamCollection.*No space left on device"):
        fetch(name, tmp_path, progress=False)
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # the archive stays for the next try


def test_cli_seed_reports_a_missing_folder_and_tampered_files(tmp_path, data_dir, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSE_DATA_DIR", str(cache))
    assert data.main(["seed", str(tmp_path / "missing")]) == 2
    assert f"seed: {tmp_path / 'missing'} is not a folder" in capsys.readouterr().err

    (tmp_path / "parent" / "data").mkdir(parents=True)  # the folder above the copy, given by mistake
    assert data.main(["seed", str(tmp_path / "parent")]) == 2
    err = capsys.readouterr().err
    assert f"seed: {tmp_path / 'parent'} holds none of the course files (the-verdict.txt" in err
    assert len(err.strip().splitlines()) == 1 and not any(cache.rglob("*.txt"))

    source = tmp_path / "copy"
    shutil.copytree(data_dir, source, ignore=shutil.ignore_patterns("tiktoken", "models", "checkpoints"))
    (source / "the-verdict.txt").write_text("tampered", encoding="utf-8")
    assert data.main(["seed", str(source)]) == 2
    err = capsys.readouterr().err
    assert "1 file(s)" in err and "the-verdict.txt" in err and len(err.strip().splitlines()) == 1
    seeded = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    assert seeded == set(COURSE_FILES) - {"the-verdict.txt"}  # every good file all the same


def test_cli_seed_names_an_unreadable_source_file_and_the_right_fix(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    source = tmp_path / "copy"
    shutil.copytree(data_dir, source, ignore=shutil.ignore_patterns("tiktoken", "models", "checkpoints"))
    real = data.sha256_of

    def unreadable(path):  # chmod 000 does not stop root, who runs CI
        if Path(path) == source / "the-verdict.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(data, "sha256_of", unreadable)
    assert data.main(["seed", str(source)]) == 2
    err = capsys.readouterr().err
    assert f"{source / 'the-verdict.txt'}: Permission denied; make it readable" in err
    assert "COURSE_DATA_DIR" not in err and len(err.strip().splitlines()) == 1


def test_an_empty_course_data_dir_is_unset_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", "")
    monkeypatch.chdir(tmp_path)
    assert data.cache_dir().resolve() != tmp_path.resolve()
    monkeypatch.delenv("COURSE_DATA_DIR")
    default = data.cache_dir()
    monkeypatch.setenv("COURSE_DATA_DIR", "")
    assert data.cache_dir() == default
    assert data.cache_dir(os.environ.get("COURSE_DATA_DIR")) == default  # what the notebooks pass on


def test_cli_fetch_offline_is_a_short_error(tmp_path, monkeypatch, no_sleep, capsys, refused_port):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    for name in COURSE_FILES:
        point_at(monkeypatch, name, f"http://127.0.0.1:{refused_port}/{name}")
    assert data.main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: {len(COURSE_FILES)} of {len(COURSE_FILES)} course files")
    assert "Traceback" not in err and "helpers.support seed DIR" in err


def test_the_test_process_cannot_reach_the_network():
    """conftest's guard: a connection to another machine is refused as offline and recorded (the
    test that made it fails at teardown); loopback is left alone."""
    import conftest
    with pytest.raises(OSError, match="tests need no network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: documentation only
    assert conftest._network_attempts[-1:] == [("192.0.2.1", 80)]
    conftest._network_attempts.pop()  # the attempt above was the point of this test
    # a host name is refused at its lookup, before any DNS query leaves the machine
    with pytest.raises(OSError, match="tests need no network: refused to look up 'example.com'"):
        socket.create_connection(("example.com", 80), timeout=1)
    assert conftest._network_attempts[-1:] == [("example.com", "name lookup")]
    conftest._network_attempts.pop()
    assert socket.getaddrinfo("localhost", 80) and socket.getaddrinfo("127.0.0.1", 80)
    assert socket.getaddrinfo(socket.gethostname(), None)  # this machine's own name resolves locally
    before = list(conftest._network_attempts)
    assert all(conftest._is_local((host, 80)) for host in ("::1", "0.0.0.0", "::ffff:127.0.0.1", "localhost"))
    assert not any(conftest._is_local((host, 80)) for host in ("8.8.8.8", "::ffff:8.8.8.8", "example.com"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=5):
            pass
    assert conftest._network_attempts == before


@pytest.mark.parametrize("kwargs, message", [
    ({"retries": 0}, "retries=0 must be a whole number >= 1"), ({"retries": 2.5}, "retries=2.5"),
    ({"timeout": 0}, "timeout=0 must be a finite number of seconds > 0"),
    ({"timeout": float("nan")}, "timeout=nan"), ({"backoff": -1}, "backoff=-1"),
])
def test_download_file_refuses_settings_that_make_no_sense(tmp_path, kwargs, message):
    """retries=0 made no attempt and then raised a DownloadError that named no cause."""
    from helpers.support.download import download_file
    with pytest.raises(ValueError, match=message):
        download_file("https://example.invalid/x", tmp_path / "x", **kwargs)
    assert not list(tmp_path.iterdir())


# ---- where the tests get the course files (tests/conftest.py, `make test`) -----------------------

def _collect_only(env_changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/test_support_files.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_tests_without_course_files_stop_with_what_to_do(tmp_path):
    # a public clone with no ../shared/data and an empty cache: one message naming both fixes
    empty = tmp_path / "cache"
    empty.mkdir()
    run = _collect_only({"COURSE_SHARED_DATA": str(tmp_path / "no-shared"), "COURSE_DATA_DIR": str(empty)})
    assert run.returncode == 4, run.stdout + run.stderr  # pytest's usage error, not a traceback
    assert "helpers.support fetch" in run.stderr and str(tmp_path / "no-shared") in run.stderr
    # a cache folder that does not exist at all gets the same message (it used to be a ValueError)
    run = _collect_only({"COURSE_SHARED_DATA": str(tmp_path / "no-shared"), "COURSE_DATA_DIR": str(tmp_path / "none")})
    assert run.returncode == 4 and "helpers.support fetch" in run.stderr, run.stdout + run.stderr


def test_the_tests_read_the_users_filled_cache_when_there_is_no_shared_copy(tmp_path, data_dir):
    # what `make test` leaves after its one `fetch`: the user's cache holds every file
    cache = tmp_path / "cache"
    seed_cache(data_dir, cache)
    run = _collect_only({"COURSE_SHARED_DATA": str(tmp_path / "no-shared"), "COURSE_DATA_DIR": str(cache)})
    assert run.returncode == 0, run.stdout + run.stderr


def test_make_test_fetches_only_without_a_shared_copy(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # -n: print the commands, run none
    out = subprocess.run([make, "-n", "-W", ".venv/.installed", "test", f"SHARED_DATA={tmp_path / 'no-shared'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert f'[ -d "{tmp_path / "no-shared"}" ] || ' in out and "helpers.support fetch" in out
    assert f'COURSE_SHARED_DATA="{tmp_path / "no-shared"}"' in out and "pytest" in out
    assert "COURSE_REQUIRE_BOOK_PACKAGE=1 " in out  # the side-by-side tests run, never skip quietly


def test_the_tests_asked_for_the_book_package_stop_without_it(tmp_path):
    hidden = tmp_path / "hide" / "llms_from_scratch"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('not installed here')\n")
    run = _collect_only({"PYTHONPATH": str(hidden.parent), "COURSE_REQUIRE_BOOK_PACKAGE": "1"})
    assert run.returncode == 4 and "llms-from-scratch==1.0.19" in run.stderr, run.stdout + run.stderr
    run = _collect_only({"PYTHONPATH": str(hidden.parent), "COURSE_REQUIRE_BOOK_PACKAGE": ""})
    assert run.returncode == 0, run.stdout + run.stderr  # a plain pytest: those tests skip
