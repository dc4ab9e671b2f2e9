"""The judge client against a real HTTP server on loopback that speaks Ollama's REST API.

The server is the exported `helpers.instruction.LoopbackOllama` (the notebook shows it too). It
answers GET /api/tags and POST /api/chat the way Ollama does: a single JSON
object when the request says "stream": false, otherwise chunked application/x-ndjson lines,
each {"message": {"content": ...}, "done": false}, then a final line with "done": true.
Unknown models get 404 {"error": "model ... not found"}; failures can be switched on per test.
One test checks the client, independently of that server, against the replies Ollama's API
reference documents, served by a plain http.server.
"""
import contextlib
import json
import http.server
import os
import socket
import threading
import time
import uuid

import pytest
import requests

from helpers.instruction import (JudgeUnavailable, LoopbackOllama, check_if_running, generate_model_scores,
                                 judge_prompt, ollama_base_url, ollama_status, parse_score, query_model,
                                 query_ollama, score_responses)

MODEL = "llama3.1:8b"
ENTRY = {"instruction": "Name the capital of France.", "input": "", "output": "Paris.", "model_response": "Paris"}


class TricklingOllama(LoopbackOllama):
    """The exported loopback server, plus one failure the tests need: with `trickle` set, a
    streamed reply keeps coming, one chunk every `trickle` seconds, and never finishes."""
    trickle = None

    def stream_reply(self, handler, stamp, reply):
        if self.trickle is None:
            return super().stream_reply(handler, stamp, reply)
        for _ in range(100):  # 20 s at 0.2 s per chunk
            handler.send_chunk({**stamp, "message": {"role": "assistant", "content": "."}, "done": False})
            time.sleep(self.trickle)


@pytest.fixture
def ollama():
    with TricklingOllama(replies=["85"], models=[MODEL]) as fake:
        yield fake


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
    ("::1", "http://[::1]:11434"), ("::", "http://127.0.0.1:11434"),  # bare IPv6, as `ollama serve` takes it
    ("http://::1/api/chat", "http://[::1]:80"),
    ("  localhost  ", "http://localhost:11434"),
    # the book writes the chat endpoint's URL: the server is what comes before /api/...
    ("http://localhost:11434/api/chat", "http://localhost:11434"),
    ("localhost:11434/api/generate/", "http://localhost:11434"),
    ("https://example.com/ollama/api/chat", "https://example.com:443/ollama"),
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
    ("Rating: 4/5", 80), ("I would rate this response 3 out of 5", 60),  # and one of 5
    # the scale repeated from the prompt is no score
    ("Score (0-100): 75", 75), ("Score (0 to 100): 75", 75), ("Scoring from 0 to 100: 75", 75),
    ("Scores range 0-100. My score: 72", 72), ("On a scale of 1-10, I'd say 8/10", 80),
    ("Steps 1-10 are all correct. Score: 80", 80),  # a range in the text, but 80 fits no scale of 10
    # a fraction that ends the sentence
    ("8/10.", 80), ("I would rate this response 8/10.", 80), ("85/100.", 85), ("Score: 4 out of 5.", 80),
    ("I'd rate it 7 out of 10. Good.", 70),
    # the number named a score wins over a fraction elsewhere in the reply
    ("Score: 60. It answered 9/10 questions but the formatting is off.", 60),
    ("The model got 4/5 facts right but misses the tone. Score: 50", 50),
    ("It got 9/10 facts right. Rating: 4/5", 80), ("Good, 8/10 - a fair score", 80),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    "", "I cannot evaluate this.", "N/A", "150", "-5", "Score: 101", "between 70 and 80",
    "8/1000", "llama3", None, "8/10.5",
    "I'd give it a score between 70 and 80", "Score: 70-80", "3/4",  # a range, an unknown scale
    # a bare number on a scale of 5 or 10: 4 of 5 or 4 of 100? Counted, not guessed
    "I rate it 4 on a scale of 1 to 5", "Score (1-10): 7", "On a scale from 0 to 10, 9", "Score: 10 (1-10)",
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
    scores, unparseable = score_responses(entries, "model_response", MODEL, ollama.host, seed=3,
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


def test_server_down(refused_port):
    host = f"127.0.0.1:{refused_port}"
    with fails_fast():
        ok, message = ollama_status(host, MODEL, timeout=2)
    assert not ok and "ollama serve" in message
    with fails_fast(), pytest.raises(JudgeUnavailable, match="ollama serve"):
        query_ollama("x", MODEL, host, timeout=2)
    with fails_fast(), pytest.raises(JudgeUnavailable, match="ollama serve"):
        score_responses([ENTRY], judge_model=MODEL, host=host, timeout=2, progress=False)
    with fails_fast(), pytest.raises(JudgeUnavailable, match="ollama serve"):
        query_model("x", MODEL, f"http://{host}/api/chat", timeout=2)


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
    # the server waits 2 s before it answers; a client that ignored its timeout would get the reply
    with pytest.raises(JudgeUnavailable, match="within 0.5 s"):
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


def test_a_wrong_address_is_not_a_missing_model(ollama):
    """A 404 without Ollama's "model ... not found" (e.g. "404 page not found" from a path
    that is no Ollama API root) names the address, not `ollama pull`."""
    wrong = f"http://{ollama.host}/v1"
    ok, message = ollama_status(wrong, MODEL, timeout=5)
    assert not ok and "404" in message and "no Ollama API" in message and "ollama pull" not in message
    with pytest.raises(JudgeUnavailable, match="no Ollama API") as err:
        query_ollama("x", MODEL, wrong, timeout=5)
    assert "ollama pull" not in str(err.value)


class _HTMLHandler(http.server.BaseHTTPRequestHandler):
    """A web server that is not Ollama: every request gets a 200 HTML page."""

    def log_message(self, *args):
        pass

    def _page(self):
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page


def test_a_server_that_is_not_ollama_is_named_so():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HTMLHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        ok, message = ollama_status(host, MODEL, timeout=5)
        assert not ok and "not like Ollama" in message, message
        for stream in (False, True):
            with pytest.raises(JudgeUnavailable, match="not Ollama's chat format"):
                query_ollama("x", MODEL, host, stream=stream, timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_failure_half_way_keeps_the_scores_so_far():
    class FailsAfterTwoReplies(LoopbackOllama):
        def next_reply(self):
            reply = super().next_reply()
            if self._turn == 2:
                self.status = 500  # every later request fails
            return reply

    entries = [dict(ENTRY, model_response=f"answer {i}") for i in range(4)]
    with FailsAfterTwoReplies(replies=["85", "no idea", "90"], models=[MODEL]) as fake:
        with pytest.raises(JudgeUnavailable, match="after 2 of 4 entries") as err:
            score_responses(entries, "model_response", MODEL, fake.host, timeout=5, progress=False)
    assert err.value.scores == [85] and err.value.unparseable == 1


# ---- malformed hosts: a clear error, not a garbage URL ---------------------------------------

@pytest.mark.parametrize("host", [
    "ht!tp://::::",               # not a scheme, and no host or port in what follows
    "ftp://localhost:11434",      # a scheme Ollama does not speak
    "http://::::",                # colons only: no host, no port
    "localhost:abc",              # a port that is not a number
    "http://[::1]:99999",         # a port out of range
    "localhost:0",                # port 0 is not somewhere to connect to
    "exa mple.com:11434",         # a space in the host name
    "http://[::1",                # an unclosed IPv6 bracket
])
def test_ollama_base_url_refuses_malformed_hosts(host):
    with pytest.raises(ValueError, match="OLLAMA_HOST") as err:
        ollama_base_url(host)
    assert repr(host) in str(err.value)  # the message quotes what it refused


def test_malformed_ollama_host_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "ht!tp://::::")
    with pytest.raises(ValueError, match="scheme"):
        ollama_base_url()


# ---- the book's names: query_model, generate_model_scores, check_if_running ------------------

@pytest.mark.parametrize("url_form", ["{base}/api/chat", "{base}/api/chat/", "{base}"])
def test_query_model_takes_the_books_url(ollama, url_form):
    ollama.models = ["llama3"]
    ollama.replies = ["Llamas eat grass."]
    url = url_form.format(base=f"http://{ollama.host}")
    assert query_model("What do llamas eat?", "llama3", url) == "Llamas eat grass."
    request = ollama.requests[-1]
    assert request["model"] == "llama3"
    assert request["messages"] == [{"role": "user", "content": "What do llamas eat?"}]
    assert request["options"]["temperature"] == 0 and request["options"]["seed"] == 123


def test_generate_model_scores_returns_the_list_of_scores_as_the_book(ollama, capsys):
    ollama.models = ["llama3"]
    ollama.replies = ["85", "no idea", "**Score:** 100/100"]
    entries = [dict(ENTRY, resp=f"answer {i}") for i in range(3)]
    scores = generate_model_scores(entries, "resp", "llama3", host=ollama.host, progress=False)
    assert scores == [85, 100]  # a list, not (scores, count); the unreadable reply is left out ...
    assert "1 of 3 replies had no clear score" in capsys.readouterr().out  # ... and said so
    assert "answer 2" in ollama.requests[2]["messages"][0]["content"]


def test_scoring_names_a_missing_key(ollama):
    with pytest.raises(KeyError, match="'model_response'"):
        score_responses([{"instruction": "x", "input": "", "output": "y"}], host=ollama.host, progress=False)
    assert ollama.requests == []  # refused before any request


def test_timeout_must_be_a_finite_positive_number(ollama):
    for bad in (0, -1, float("nan"), float("inf"), None, "120", True, 1e10):  # 1e10 s overflows the socket
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
            query_ollama("x", MODEL, ollama.host, timeout=bad)
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
            ollama_status(ollama.host, MODEL, timeout=bad)
    assert ollama.requests == []
    assert ollama_status(ollama.host, MODEL, timeout=1e6)[0]  # long but finite is fine


@pytest.mark.parametrize("option,bad", [("temperature", -0.1), ("temperature", float("nan")),
                                        ("temperature", float("inf")), ("temperature", None), ("temperature", "0"),
                                        ("temperature", True),
                                        ("num_ctx", 0), ("num_ctx", 2048.0),
                                        ("num_ctx", -1), ("seed", -1), ("seed", 1.5), ("seed", "123"),
                                        ("seed", None), ("seed", True)])
def test_sampling_options_that_make_no_sense_are_refused_before_a_request(ollama, option, bad):
    with pytest.raises(ValueError, match=option):
        query_ollama("x", MODEL, ollama.host, **{option: bad})
    assert ollama.requests == []
    assert query_ollama("x", MODEL, ollama.host, temperature=0.7, num_ctx=512) == "85"  # sane values pass
    assert ollama.requests[-1]["options"] == {"seed": 123, "temperature": 0.7, "num_ctx": 512}


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), None, "1", True])
def test_loopback_server_refuses_a_delay_that_makes_no_sense(bad):
    with pytest.raises(ValueError, match="delay"):
        LoopbackOllama(delay=bad)


def test_check_if_running_finds_this_process():
    psutil = pytest.importorskip("psutil")
    own_name = psutil.Process(os.getpid()).name()  # e.g. "python3.11"
    assert check_if_running(own_name)
    assert check_if_running(own_name[:4])  # a part of the name is enough, as in the book
    assert not check_if_running(f"no-such-process-{uuid.uuid4().hex}")


def test_check_if_running_without_psutil_reads_proc(monkeypatch):
    if not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc")
    own_name = open(f"/proc/{os.getpid()}/comm").read().strip()
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)  # import psutil now fails
    assert check_if_running(own_name)
    assert not check_if_running(f"no-such-process-{uuid.uuid4().hex}")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_check_if_running_refuses_a_bad_name(bad):
    with pytest.raises(ValueError, match="process_name"):
        check_if_running(bad)


# ---- the loopback server itself --------------------------------------------------------------

def test_loopback_server_speaks_ollamas_api_to_a_plain_http_client():
    with LoopbackOllama(replies=["first", "second"], models=["llama3:latest"]) as fake:
        base = f"http://{fake.host}"
        tags = requests.get(f"{base}/api/tags", timeout=5).json()
        assert [m["name"] for m in tags["models"]] == ["llama3:latest"]
        chat = {"model": "llama3:latest", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        one = requests.post(fake.chat_url, json=chat, timeout=5).json()
        assert one["message"] == {"role": "assistant", "content": "first"} and one["done"] is True
        lines = requests.post(fake.chat_url, json={**chat, "stream": True}, timeout=5).text.splitlines()
        import json
        chunks = [json.loads(line) for line in lines if line.strip()]
        assert "".join(c["message"]["content"] for c in chunks) == "second"
        assert chunks[-1]["done"] is True and not any(c["done"] for c in chunks[:-1])
        missing = requests.post(fake.chat_url, json={**chat, "model": "mistral"}, timeout=5)
        assert missing.status_code == 404 and "not found" in missing.json()["error"]
    with pytest.raises(RuntimeError, match="not running"):
        fake.host


@pytest.mark.parametrize("bad", [[], "85"])
def test_loopback_server_needs_a_list_of_replies(bad):
    with pytest.raises(ValueError, match="replies"):
        LoopbackOllama(replies=bad)


# ---- against Ollama's own documented replies, not our loopback server's ---------------------------

# Bodies from Ollama's API reference (docs/api.md in github.com/ollama/ollama: "List Local Models",
# "Chat Request (Streaming)", "Chat request (No streaming)"): a streamed chat's last line has no
# "message" at all, and images may be null. The middle chunks have the first chunk's shape.
_DOCS_TAGS = {"models": [
    {"name": "codellama:13b", "modified_at": "2023-11-04T14:56:49.277302595-07:00", "size": 7365960935,
     "digest": "9f438cb9cd581fc025612d27f7c1a6669ff83a8bb0ed86c94fcf4c5440555697",
     "details": {"format": "gguf", "family": "llama", "families": None, "parameter_size": "13B",
                 "quantization_level": "Q4_0"}},
    {"name": "llama3:latest", "modified_at": "2023-12-07T09:32:18.757212583-08:00", "size": 3825819519,
     "digest": "fe938a131f40e6f6d40083c9f0f430a515233eb2edaa6d72eb85c50d64f2300e",
     "details": {"format": "gguf", "family": "llama", "families": None, "parameter_size": "7B",
                 "quantization_level": "Q4_0"}}]}
_DOCS_CHAT = {"model": "llama3.2", "created_at": "2023-12-12T14:13:43.416799Z",
              "message": {"role": "assistant", "content": "Hello! How are you today?"}, "done": True,
              "total_duration": 5191566416, "load_duration": 2154458, "prompt_eval_count": 26,
              "prompt_eval_duration": 383809000, "eval_count": 298, "eval_duration": 4799921000}
_DOCS_STREAM = [
    *({"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
       "message": {"role": "assistant", "content": piece, "images": None}, "done": False}
      for piece in ("The", " sky", " is blue.")),
    {"model": "llama3.2", "created_at": "2023-08-04T19:22:45.499127Z", "done": True, "total_duration": 4883583458,
     "load_duration": 1334875, "prompt_eval_count": 26, "prompt_eval_duration": 342546000, "eval_count": 282,
     "eval_duration": 4535599000}]


class _DocumentedOllama(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self._send(200, "application/json", json.dumps(_DOCS_TAGS).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("stream", True):
            lines = b"".join(json.dumps(chunk).encode() + b"\n" for chunk in _DOCS_STREAM)
            self._send(200, "application/x-ndjson", lines)
        else:
            self._send(200, "application/json", json.dumps(_DOCS_CHAT).encode())

    def _send(self, status, kind, payload):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_the_client_reads_ollamas_documented_replies():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DocumentedOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        assert ollama_status(host, "llama3")[0]  # listed as llama3:latest
        ok, message = ollama_status(host, "codellama")  # only codellama:13b is there
        assert not ok and "ollama pull codellama" in message
        assert query_ollama("why is the sky blue?", "llama3.2", host, stream=False) == "Hello! How are you today?"
        assert query_ollama("why is the sky blue?", "llama3.2", host, stream=True) == "The sky is blue."
    finally:
        server.shutdown()
        server.server_close()


def test_scoring_takes_any_iterable_as_the_books_loop_does(ollama, capsys):
    ollama.replies = ["85", "70"]
    entries = [dict(ENTRY, model_response=f"answer {i}") for i in range(2)]
    assert score_responses((e for e in entries), host=ollama.host, progress=False) == ([85, 70], 0)
    assert generate_model_scores(iter(entries), "model_response", MODEL, host=ollama.host, progress=False) == [85, 70]
    assert len(ollama.requests) == 4


def test_loopback_server_refuses_a_single_model_name_as_a_string():
    with pytest.raises(ValueError, match=r"models must be a list of model names, e.g. \['llama3'\]"):
        LoopbackOllama(models="llama3")


@pytest.mark.parametrize("option, bad", [("prompt", b"grade this"), ("prompt", ["grade", "this"]), ("model", None)])
def test_a_prompt_or_model_that_is_not_text_is_refused_before_a_request(ollama, option, bad):
    args = {"prompt": "grade this", "model": MODEL, **{option: bad}}
    with pytest.raises(TypeError, match=f"{option} must be a str"):
        query_ollama(host=ollama.host, **args)
    assert ollama.requests == []


@pytest.mark.parametrize("replies", [[85, 90], ["85", None]])
def test_loopback_server_refuses_replies_that_are_not_text(replies):
    with pytest.raises(ValueError, match="replies must be a list of at least one canned reply text"):
        LoopbackOllama(replies=replies)


def test_numpy_sampling_options_are_sent_as_json_numbers(ollama):
    import numpy as np
    assert query_ollama("x", MODEL, ollama.host, temperature=np.float32(0.5), num_ctx=np.int64(512),
                        seed=np.int32(7)) == "85"
    assert ollama.requests[-1]["options"] == {"seed": 7, "temperature": 0.5, "num_ctx": 512}


@pytest.mark.parametrize("bad", ["500", None, 99, 600, 200.0, True])
def test_loopback_server_refuses_a_status_it_cannot_send(bad):
    with pytest.raises(ValueError, match=r"status must be an HTTP status code, a whole number from 100 to 599"):
        LoopbackOllama(status=bad)


def test_loopback_server_started_twice_is_one_server_that_close_stops():
    fake = LoopbackOllama(status=503)
    fake.start()
    host = fake.host
    assert fake.start() is fake and fake.host == host  # a second start used to leave the first server running
    assert requests.get(f"http://{host}/api/tags", timeout=5).status_code == 503
    fake.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{host}/api/tags", timeout=5)
