"""The judge client against a real HTTP server on loopback that speaks Ollama's REST API.

The fake server answers GET /api/tags and POST /api/chat the way Ollama does: a single JSON
object when the request says "stream": false, otherwise chunked application/x-ndjson lines,
each {"message": {"content": ...}, "done": false}, then a final line with "done": true.
Unknown models get 404 {"error": "model ... not found"}; failures can be switched on per test.
"""
import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.instruction import (JudgeUnavailable, generate_model_scores, judge_prompt, ollama_base_url,
                                 ollama_status, parse_score, query_ollama)

MODEL = "llama3.1:8b"
ENTRY = {"instruction": "Name the capital of France.", "input": "", "output": "Paris.", "model_response": "Paris"}


class FakeOllama:
    def __init__(self):
        self.models = [MODEL]
        self.replies = ["85"]    # chat replies, used in turn (cycling)
        self.status = 200        # anything else: every request fails with it
        self.delay = 0.0         # seconds before answering a chat request
        self.trickle = None      # seconds between streamed chunks of a reply that never ends
        self.requests = []       # the JSON bodies of chat requests
        self._turn = 0

    def next_reply(self):
        reply = self.replies[self._turn % len(self.replies)]
        self._turn += 1
        return reply


def _handler(fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _json(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _chunk(self, obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_GET(self):
            if fake.status != 200:
                return self._json(fake.status, {"error": "something broke"})
            if self.path != "/api/tags":
                return self._json(404, {"error": "404 page not found"})
            self._json(200, {"models": [{"name": m, "model": m, "size": 4920753328,
                                         "details": {"format": "gguf", "family": "llama"}} for m in fake.models]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(body)
            if fake.status != 200:
                return self._json(fake.status, {"error": "llama runner process has terminated"})
            if self.path != "/api/chat":
                return self._json(404, {"error": "404 page not found"})
            if body["model"] not in fake.models:
                return self._json(404, {"error": f"model \"{body['model']}\" not found, try pulling it first"})
            time.sleep(fake.delay)
            reply = fake.next_reply()
            stamp = {"model": body["model"], "created_at": "2024-08-01T12:00:00.000000Z"}
            if body.get("stream", True) is False:
                return self._json(200, {**stamp, "message": {"role": "assistant", "content": reply},
                                        "done_reason": "stop", "done": True, "total_duration": 123456})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if fake.trickle is not None:  # a reply that keeps coming, slowly, and never finishes
                for _ in range(100):  # 20 s at 0.2 s per chunk
                    self._chunk({**stamp, "message": {"role": "assistant", "content": "."}, "done": False})
                    time.sleep(fake.trickle)
                return
            for i in range(0, len(reply), 3):  # a few characters per line, as tokens arrive
                self._chunk({**stamp, "message": {"role": "assistant", "content": reply[i:i + 3]}, "done": False})
            self._chunk({**stamp, "message": {"role": "assistant", "content": ""}, "done_reason": "stop",
                         "done": True, "total_duration": 123456})
            self.wfile.write(b"0\r\n\r\n")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not keep the test waiting

    def handle_error(self, request, client_address):  # the client hanging up early is expected
        pass


@pytest.fixture
def ollama():
    fake = FakeOllama()
    server = _Server(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.host = f"127.0.0.1:{server.server_address[1]}"  # OLLAMA_HOST style: no scheme
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- host names as OLLAMA_HOST gives them ----------------------------------------------------

@pytest.mark.parametrize("host, url", [
    ("localhost:11434", "http://localhost:11434"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("0.0.0.0:8080", "http://127.0.0.1:8080"),
    ("", "http://127.0.0.1:11434"),
    ("example.com", "http://example.com:11434"),
    ("http://localhost:11434", "http://localhost:11434"),
    ("http://example.com", "http://example.com:80"),       # an explicit scheme brings its own port
    ("https://example.com/ollama/", "https://example.com:443/ollama"),
    ("[::1]:11434", "http://[::1]:11434"),
    ("  localhost  ", "http://localhost:11434"),
])
def test_ollama_base_url(host, url):
    assert ollama_base_url(host) == url


def test_ollama_base_url_reads_the_environment(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "judge.local:9999")
    assert ollama_base_url() == "http://judge.local:9999"
    monkeypatch.delenv("OLLAMA_HOST")
    assert ollama_base_url() == "http://127.0.0.1:11434"


# ---- parsing scores --------------------------------------------------------------------------

@pytest.mark.parametrize("reply, score", [
    ("85", 85), ("Score: 85/100", 85), ("I would rate this 85.", 85), ("85/100", 85), (" 85\n", 85),
    ("**85**", 85), ("Rating: 85", 85), ("85 out of 100", 85), ("I'd score it 85, because it is right.", 85),
    ("0", 0), ("100", 100), ("100.0", 100), ("84.6", 85),
    ("Score: 8/10", 80), ("7 out of 10", 70),   # an explicit scale of 10 is converted
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    "", "I cannot evaluate this.", "N/A", "150", "-5", "Score: 101", "between 70 and 80",
    "8/1000", "llama3", None,
])
def test_parse_score_rejects_junk_and_out_of_range(reply):
    assert parse_score(reply) is None


# ---- talking to the server -------------------------------------------------------------------

def test_status_ok_when_the_model_is_pulled(ollama):
    ok, message = ollama_status(ollama.host, MODEL, timeout=5)
    assert ok, message


def test_status_matches_the_latest_tag(ollama):
    ollama.models = ["llama3:latest"]
    assert ollama_status(ollama.host, "llama3", timeout=5)[0]
    assert not ollama_status(ollama.host, "llama3:70b", timeout=5)[0]


@pytest.mark.parametrize("stream", [False, True])
def test_request_carries_model_messages_temperature_and_seed(ollama, stream):
    prompt = judge_prompt(ENTRY, ENTRY["model_response"])
    assert query_ollama(prompt, MODEL, ollama.host, seed=7, temperature=0.0, stream=stream, timeout=10) == "85"
    request = ollama.requests[-1]
    assert request["model"] == MODEL
    assert request["messages"] == [{"role": "user", "content": prompt}]
    assert request["options"]["temperature"] == 0
    assert request["options"]["seed"] == 7
    assert request["stream"] is stream


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reply", ["85", "Score: 85/100", "I would rate this 85."])
def test_replies_parse_to_the_score(ollama, stream, reply):
    ollama.replies = [reply]
    text = query_ollama("grade this", MODEL, ollama.host, stream=stream, timeout=10)
    assert text == reply
    assert parse_score(text) == 85


def test_scores_skip_and_count_junk(ollama):
    ollama.replies = ["85", "I am not sure what you mean.", "Score: 70/100", "150"]
    entries = [dict(ENTRY, model_response=f"answer {i}") for i in range(4)]
    scores, unparseable = generate_model_scores(entries, "model_response", MODEL, ollama.host, seed=3,
                                                timeout=10, progress=False)
    assert scores == [85, 70] and unparseable == 2
    assert [r["options"]["seed"] for r in ollama.requests] == [3] * 4
    assert "answer 2" in ollama.requests[2]["messages"][0]["content"]


# ---- failures: a clear message, never a hang -------------------------------------------------

@contextlib.contextmanager
def fails_fast(limit=10.0):
    """Wrap the whole check (including pytest.raises): it must be over within `limit` seconds."""
    t0 = time.monotonic()
    yield
    assert time.monotonic() - t0 < limit, "took far too long: it should give up quickly"


def test_server_down(closed_port):
    host = f"127.0.0.1:{closed_port}"
    with fails_fast():
        ok, message = ollama_status(host, MODEL, timeout=2)
    assert not ok and "ollama serve" in message
    with fails_fast(), pytest.raises(JudgeUnavailable, match="ollama serve"):
        query_ollama("x", MODEL, host, timeout=2)
    with fails_fast(), pytest.raises(JudgeUnavailable, match="ollama serve"):
        generate_model_scores([ENTRY], judge_model=MODEL, host=host, timeout=2, progress=False)


def test_model_not_pulled(ollama):
    ollama.models = ["mistral:latest"]
    ok, message = ollama_status(ollama.host, MODEL, timeout=5)
    assert not ok and f"ollama pull {MODEL}" in message
    with pytest.raises(JudgeUnavailable, match=f"ollama pull {MODEL}"):
        query_ollama("x", MODEL, ollama.host, timeout=5)


def test_http_500(ollama):
    ollama.status = 500
    ok, message = ollama_status(ollama.host, MODEL, timeout=5)
    assert not ok and "500" in message
    for stream in (False, True):
        with pytest.raises(JudgeUnavailable, match="500"):
            query_ollama("x", MODEL, ollama.host, stream=stream, timeout=5)


@pytest.mark.parametrize("stream", [False, True])
def test_slow_reply_times_out(ollama, stream):
    ollama.delay = 2.0
    with fails_fast(1.9), pytest.raises(JudgeUnavailable, match="within 0.5 s"):  # the server waits 2 s
        query_ollama("x", MODEL, ollama.host, stream=stream, timeout=0.5)


def test_reply_that_never_finishes_times_out(ollama):
    ollama.trickle = 0.2  # each chunk arrives well within the read timeout; the whole never ends
    with fails_fast(5.0), pytest.raises(JudgeUnavailable, match="within 1.0 s"):
        query_ollama("x", MODEL, ollama.host, stream=True, timeout=1.0)


def test_status_of_a_server_that_does_not_answer_in_time():
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with fails_fast(5.0):
            ok, message = ollama_status(f"127.0.0.1:{listener.getsockname()[1]}", MODEL, timeout=0.5)
    assert not ok and "did not answer within 0.5 s" in message
