"""Loading GPT-2 weights (helpers.weights, ch05) from OpenAI's TensorFlow checkpoint format and
from Hugging Face's safetensors layout, over loopback servers laid out like OpenAI's storage and
like the Hugging Face hub.

The checkpoints are written here, independently of helpers.weights, from a randomly initialised
transformers GPT2LMHeadModel; "the same weights loaded another way" is that model itself.
"""
import http.server
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import torch

from helpers.model import GPTModel
from helpers.support.download import DownloadError
from helpers.weights import (GPT2_FILES, GPT2_HF_REPOS, download_and_load_gpt2, download_gpt2_safetensors,
                             gpt2_weight_map, gpt_config_from_hparams, gpt_from_hf_folder, gpt_to_params,
                             hf_name, load_gpt2_params_from_tf_ckpt, load_hf_gpt2_safetensors,
                             load_weights_into_gpt, save_gpt_as_hf, tf_name)
from helpers.weights import _lookup
from hf_reference import random_hf_gpt2

CFG = {"vocab_size": 1000, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": True}
FAST = {"retries": 1, "backoff": 0.0, "timeout": 5.0, "progress": False}


def write_openai_checkpoint(hf, folder: Path, data_dir: Path):
    """OpenAI's file set and variable names, written with TensorFlow from an HF model."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k.removeprefix("transformer."): v.numpy() for k, v in hf.state_dict().items()}
    arrays = {"model/wte": sd["wte.weight"], "model/wpe": sd["wpe.weight"],
              "model/ln_f/g": sd["ln_f.weight"], "model/ln_f/b": sd["ln_f.bias"]}
    for i in range(CFG["n_layers"]):
        for hf_name, tf_name in [("attn.c_attn", "attn/c_attn"), ("attn.c_proj", "attn/c_proj"),
                                 ("mlp.c_fc", "mlp/c_fc"), ("mlp.c_proj", "mlp/c_proj")]:
            arrays[f"model/h{i}/{tf_name}/w"] = sd[f"h.{i}.{hf_name}.weight"][None]  # OpenAI: (1, in, out)
            arrays[f"model/h{i}/{tf_name}/b"] = sd[f"h.{i}.{hf_name}.bias"]
        for ln in ("ln_1", "ln_2"):
            arrays[f"model/h{i}/{ln}/g"] = sd[f"h.{i}.{ln}.weight"]
            arrays[f"model/h{i}/{ln}/b"] = sd[f"h.{i}.{ln}.bias"]
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables, save_relative_paths=True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / "model.ckpt"))
    (folder / "hparams.json").write_text(json.dumps(
        {"n_vocab": CFG["vocab_size"], "n_ctx": CFG["context_length"], "n_embd": CFG["emb_dim"],
         "n_head": CFG["n_heads"], "n_layer": CFG["n_layers"]}))
    for name in ("encoder.json", "vocab.bpe"):
        (folder / name).write_bytes((data_dir / "gpt2" / name).read_bytes())
    assert sorted(p.name for p in folder.iterdir()) == sorted(GPT2_FILES)


class Storage(http.server.ThreadingHTTPServer):
    """Serves files under /<prefix>/<size>/<file> from a folder, with HTTP Range support."""

    def __init__(self, root: Path):
        self.root, self.missing, self.requests = root, set(), []
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def base(self, prefix):
        return f"http://127.0.0.1:{self.server_address[1]}/{prefix}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        prefix, rel = self.path.lstrip("/").split("/", 1)
        self.server.requests.append((prefix, rel, self.headers.get("Range")))
        path = self.server.root / rel
        if (prefix, rel) in self.server.missing or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_gpt2(CFG, seed=11)


@pytest.fixture(scope="module")
def storage(hf_model, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    write_openai_checkpoint(hf_model, root / "124M", data_dir)
    server = Storage(root)
    yield server
    server.shutdown()


def logits_of(model, idx):
    with torch.no_grad():
        return model(idx)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, CFG["vocab_size"], (2, CFG["context_length"]), generator=torch.Generator().manual_seed(3))


def loaded_gpt(settings, params):
    gpt = GPTModel(gpt_config_from_hparams(settings)).eval()
    load_weights_into_gpt(gpt, params)
    return gpt


def test_download_and_load_matches_transformers(storage, hf_model, tokens, tmp_path):
    settings, params = download_and_load_gpt2("124M", tmp_path, base_urls=[storage.base("primary")], **FAST)
    assert settings == {"n_vocab": 1000, "n_ctx": 32, "n_embd": 32, "n_head": 4, "n_layer": 2}
    assert sorted(p.name for p in (tmp_path / "124M").iterdir()) == sorted(GPT2_FILES)
    gpt = loaded_gpt(settings, params)
    assert (logits_of(gpt, tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4


def test_complete_files_are_not_downloaded_again(storage, tmp_path):
    download_and_load_gpt2("124M", tmp_path, base_urls=[storage.base("again")], **FAST)
    before = len([r for r in storage.requests if r[0] == "again"])
    download_and_load_gpt2("124M", tmp_path, base_urls=[storage.base("again")], **FAST)
    assert before == len(GPT2_FILES)
    assert len([r for r in storage.requests if r[0] == "again"]) == before


def test_truncated_download_resumes_with_a_range_request(storage, hf_model, tokens, tmp_path):
    name = "model.ckpt.data-00000-of-00001"
    full = (storage.root / "124M" / name).read_bytes()
    (tmp_path / "124M").mkdir()
    (tmp_path / "124M" / (name + ".part")).write_bytes(full[: len(full) // 3])
    settings, params = download_and_load_gpt2("124M", tmp_path, base_urls=[storage.base("resume")], **FAST)
    assert ("resume", f"124M/{name}", f"bytes={len(full) // 3}-") in storage.requests
    assert (tmp_path / "124M" / name).read_bytes() == full
    assert (logits_of(loaded_gpt(settings, params), tokens) - hf_model(tokens).logits.detach()).abs().max() <= 1e-4


def test_404_on_the_primary_falls_back_to_the_backup(storage, tmp_path):
    storage.missing.add(("gone", "124M/model.ckpt.index"))
    download_and_load_gpt2("124M", tmp_path, base_urls=[storage.base("gone"), storage.base("backup")], **FAST)
    assert ("backup", "124M/model.ckpt.index", None) in storage.requests
    assert not any(r[0] == "backup" and r[1] != "124M/model.ckpt.index" for r in storage.requests)


def test_refused_connection_gives_the_offline_error(tmp_path, refused_port):
    with pytest.raises(DownloadError) as err:
        download_and_load_gpt2("124M", tmp_path, base_urls=[f"http://127.0.0.1:{refused_port}/a"], **FAST)
    message = str(err.value)
    assert f"http://127.0.0.1:{refused_port}/a/124M/checkpoint" in message
    assert str((tmp_path / "124M" / "checkpoint").resolve()) in message


def test_unknown_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        download_and_load_gpt2("125M", tmp_path)


def test_shape_mismatch_names_the_tensor(storage):
    settings = json.loads((storage.root / "124M" / "hparams.json").read_text())
    params = load_gpt2_params_from_tf_ckpt(storage.root / "124M", settings)
    wrong = GPTModel({**gpt_config_from_hparams(settings), "context_length": 64})
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape mismatch for wpe: the checkpoint has \(32, 32\).*the model is unchanged"):
        load_weights_into_gpt(wrong, params)
    # wte comes before wpe: it used to be overwritten by the time wpe was refused
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items()), "a refused load changed the model"
    no_bias = GPTModel({**gpt_config_from_hparams(settings), "qkv_bias": False})
    before = {k: v.clone() for k, v in no_bias.state_dict().items()}
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_weights_into_gpt(no_bias, params)
    assert all(torch.equal(before[k], v) for k, v in no_bias.state_dict().items()), "a refused load changed the model"
    deeper = GPTModel({**gpt_config_from_hparams(settings), "n_layers": 3})
    with pytest.raises(ValueError, match="transformer blocks"):
        load_weights_into_gpt(deeper, params)


def test_missing_tensor_is_a_clear_error(storage):
    settings = json.loads((storage.root / "124M" / "hparams.json").read_text())
    params = load_gpt2_params_from_tf_ckpt(storage.root / "124M", settings)
    del params["blocks"][1]["mlp"]["c_fc"]["b"]
    with pytest.raises(ValueError, match="no tensor 'blocks/1/mlp/c_fc/b'"):
        load_weights_into_gpt(GPTModel(gpt_config_from_hparams(settings)), params)


def test_safetensors_from_transformers(hf_model, tokens, tmp_path):
    hf_model.save_pretrained(tmp_path)  # model.safetensors, as on the Hugging Face hub
    gpt = GPTModel(CFG).eval()
    load_weights_into_gpt(gpt, load_hf_gpt2_safetensors(tmp_path / "model.safetensors"))
    assert (logits_of(gpt, tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4


def test_a_bfloat16_save_pretrained_file_loads(hf_model, tokens, tmp_path):
    """NumPy has no bfloat16: such a file must load as the torch tensors it holds."""
    import copy
    half = copy.deepcopy(hf_model).to(torch.bfloat16)
    half.save_pretrained(tmp_path)
    gpt = GPTModel(CFG).eval()
    load_weights_into_gpt(gpt, load_hf_gpt2_safetensors(tmp_path / "model.safetensors"))
    reference = GPTModel(CFG).eval()
    load_weights_into_gpt(reference, _params_of_hf(half.float(), tmp_path / "float"))  # the same bf16 values
    assert gpt.tok_emb.weight.dtype == torch.float32
    assert torch.equal(logits_of(gpt, tokens), logits_of(reference, tokens))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_our_export_loads_in_transformers(qkv_bias, tokens, tmp_path):
    from transformers import GPT2LMHeadModel
    torch.manual_seed(4)
    gpt = GPTModel({**CFG, "qkv_bias": qkv_bias}).eval()  # untied head, as trained from scratch
    save_gpt_as_hf(gpt, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert (logits_of(gpt, tokens) - hf(tokens).logits.detach()).abs().max().item() <= 1e-4
    back = GPTModel({**CFG, "qkv_bias": qkv_bias}).eval()
    load_weights_into_gpt(back, load_hf_gpt2_safetensors(tmp_path / "model.safetensors"))
    assert torch.equal(logits_of(back, tokens), logits_of(gpt, tokens))


def test_a_re_export_that_is_stopped_keeps_the_previous_model(tokens, tmp_path, monkeypatch):
    """save_gpt_as_hf replaces each file whole: stopped while writing the weights, the folder
    still holds the previous export, which loads."""
    import safetensors.torch
    torch.manual_seed(4)
    first = GPTModel(CFG).eval()
    save_gpt_as_hf(first, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def stopped(tensors, metadata=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(safetensors.torch, "save", stopped)
    with pytest.raises(KeyboardInterrupt):
        save_gpt_as_hf(GPTModel(CFG), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    back = GPTModel(CFG).eval()
    load_weights_into_gpt(back, load_hf_gpt2_safetensors(tmp_path / "model.safetensors"))
    assert torch.equal(logits_of(back, tokens), logits_of(first, tokens))


def test_a_re_export_stopped_while_writing_the_config_keeps_the_previous_pair(tokens, tmp_path, monkeypatch):
    """The weights are written before the config: stopped between the two, the folder must not
    pair a new (here deeper) model's weights with the old config."""
    import json
    torch.manual_seed(4)
    first = GPTModel(CFG).eval()
    save_gpt_as_hf(first, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_dumps = json.dumps

    def stopped(obj, **kwargs):
        if isinstance(obj, dict) and obj.get("model_type") == "gpt2":
            raise KeyboardInterrupt
        return real_dumps(obj, **kwargs)
    monkeypatch.setattr(json, "dumps", stopped)
    with pytest.raises(KeyboardInterrupt):
        save_gpt_as_hf(GPTModel({**CFG, "n_layers": CFG["n_layers"] + 1}), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file left either


def test_untied_head_round_trips_through_params(tokens):
    torch.manual_seed(5)
    gpt = GPTModel(CFG).eval()  # trained from scratch: head and embedding differ
    params = gpt_to_params(gpt)
    assert "out_head" in params
    back = GPTModel(CFG).eval()
    load_weights_into_gpt(back, params)
    assert torch.equal(logits_of(back, tokens), logits_of(gpt, tokens))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loading_keeps_the_parameters_so_an_earlier_optimizer_trains_the_loaded_weights(dtype, tokens):
    torch.manual_seed(5)
    params = gpt_to_params(GPTModel(CFG))
    gpt = GPTModel(CFG).to(dtype)
    before = list(gpt.parameters())
    optimizer = torch.optim.SGD(gpt.parameters(), lr=0.1)  # made before loading, as a script might
    load_weights_into_gpt(gpt, params)
    assert all(a is b for a, b in zip(before, gpt.parameters())) and len(before) == len(list(gpt.parameters()))
    assert all(p.dtype == dtype for p in gpt.parameters())
    loaded = gpt.out_head.weight.detach().clone()
    assert torch.equal(loaded, params["out_head"].to(dtype))
    gpt(tokens).logsumexp(-1).mean().backward()
    optimizer.step()
    assert not torch.equal(gpt.out_head.weight, loaded)  # the optimizer moved the loaded weights

@pytest.mark.parametrize("qkv_bias", [True, False])
def test_weight_map_covers_every_parameter_once(qkv_bias):
    gpt = GPTModel({**CFG, "qkv_bias": qkv_bias})
    mapped = []
    for _, ours, _ in gpt2_weight_map(CFG["n_layers"]):
        mapped += list(ours) if isinstance(ours, tuple) else [ours]
    present = [n for n in mapped if n in dict(gpt.named_parameters())]
    assert len(present) == len(set(present))
    assert set(present) | {"out_head.weight"} == set(dict(gpt.named_parameters()))
    assert len(mapped) - len(present) == (0 if qkv_bias else 3 * CFG["n_layers"])


def test_tensor_names_match_both_published_spellings(storage, hf_model):
    import tensorflow as tf
    tf_vars = {name for name, _ in tf.train.list_variables(str(storage.root / "124M" / "model.ckpt"))}
    hf_keys = {k for k in hf_model.state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))} - {"lm_head.weight"}
    paths = [path for path, _, _ in gpt2_weight_map(CFG["n_layers"])]
    assert {tf_name(p) for p in paths} == tf_vars
    assert {hf_name(p) for p in paths} == hf_keys
    assert tf_name("blocks/1/attn/c_attn/w") == "model/h1/attn/c_attn/w"
    assert hf_name("g") == "transformer.ln_f.weight"


class Hub(http.server.ThreadingHTTPServer):
    """A loopback endpoint answering like the Hugging Face hub's /<repo>/resolve/<revision>/<file>."""

    commit = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, files: dict):
        self.files, self.requests = files, []
        super().__init__(("127.0.0.1", 0), HubHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, with_body):
        self.server.requests.append((self.command, self.path))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", Hub.commit)
        self.send_header("ETag", f'"{abs(hash(data)):x}"')
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)


def test_hub_route_over_loopback(hf_model, tokens, tmp_path, monkeypatch):
    try:  # huggingface_hub 2.x fetches a registry of "agent harnesses" from huggingface.co itself,
        # whatever `endpoint=` says (conftest's guard caught the lookup): it gets the empty
        # registry it falls back to when offline
        from huggingface_hub.utils import _detect_agent
        monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    except (ImportError, AttributeError):  # older releases do not have it
        pass
    hf_model.save_pretrained(tmp_path / "published")
    repo = GPT2_HF_REPOS["124M"]
    hub = Hub({f"/{repo}/resolve/main/{name}": (tmp_path / "published" / name).read_bytes()
               for name in ("config.json", "model.safetensors")})
    try:
        folder = download_gpt2_safetensors("124M", cache_dir=tmp_path / "cache", endpoint=hub.url)
        # huggingface_hub's cache layout: models--<org>--<name>/snapshots/<commit>/
        assert folder == tmp_path / "cache" / "models--openai-community--gpt2" / "snapshots" / Hub.commit
        gpt = gpt_from_hf_folder(folder).eval()
        assert (logits_of(gpt, tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4
        gets = [r for r in hub.requests if r[0] == "GET"]
        assert download_gpt2_safetensors("124M", cache_dir=tmp_path / "cache", endpoint=hub.url) == folder
        assert [r for r in hub.requests if r[0] == "GET"] == gets  # the second call reads the cache
    finally:
        hub.shutdown()


def test_unreachable_hub_is_one_clean_line(tmp_path, refused_port):
    with pytest.raises(ConnectionError) as err:
        download_gpt2_safetensors("124M", cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{refused_port}")
    assert str(err.value) == "cannot reach 127.0.0.1 (offline?)"
    with pytest.raises(ValueError, match="124M, 355M"):
        download_gpt2_safetensors("125M", cache_dir=tmp_path)


def test_behind_a_proxy_the_hub_client_is_asked(tmp_path, monkeypatch):
    """With HTTPS_PROXY set, a direct connection may fail where the hub client (through the proxy)
    gets through: the quick reachability probe is left out and hf_hub_download decides."""
    import huggingface_hub
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed directly"))
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name, **k: asked.append(name) or str(tmp_path / name))
    assert download_gpt2_safetensors("124M", cache_dir=tmp_path, endpoint="https://hub.example") == tmp_path
    assert asked == ["config.json", "model.safetensors"]


def test_load_weights_works_without_tensorflow(hf_model, tokens, tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tensorflow(name, *args, **kwargs):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("No module named 'tensorflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorflow)
    hf_model.save_pretrained(tmp_path)
    gpt = gpt_from_hf_folder(tmp_path).eval()
    assert (logits_of(gpt, tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4
    with pytest.raises(ImportError, match="needs TensorFlow"):
        load_gpt2_params_from_tf_ckpt(tmp_path, {"n_layer": 2})



# ---- the book's assign and download_file, clear errors for bad input (issues 18 and 19) ----

def test_assign_checks_the_shape_and_returns_a_parameter_like_left():
    import numpy as np

    from helpers.weights import assign

    left = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    new = assign(left, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(new, torch.nn.Parameter) and new.dtype == torch.float64
    assert torch.equal(new, torch.arange(6, dtype=torch.float64).reshape(2, 3))
    source = torch.ones(2, 3)
    copied = assign(left, source)
    source.add_(1)  # a copy, not a view of the checkpoint's tensor
    assert torch.equal(copied, torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape mismatch: the model's tensor is \(2, 3\), the checkpoint's \(3, 2\)"):
        assign(left, np.zeros((3, 2)))


def test_assign_used_as_the_book_uses_it_loads_gpt2(storage, hf_model, tokens):
    """Replacing each parameter with assign(...), tensor by tensor from OpenAI's params dict (the
    book's way), gives transformers' logits."""
    import numpy as np

    from helpers.weights import assign

    settings = json.loads((storage.root / "124M" / "hparams.json").read_text())
    params = load_gpt2_params_from_tf_ckpt(storage.root / "124M", settings)
    gpt = GPTModel(gpt_config_from_hparams(settings)).eval()
    gpt.pos_emb.weight = assign(gpt.pos_emb.weight, params["wpe"])
    gpt.tok_emb.weight = assign(gpt.tok_emb.weight, params["wte"])
    for block, p in zip(gpt.trf_blocks, params["blocks"]):
        for name, w, b in zip(("W_query", "W_key", "W_value"), np.split(p["attn"]["c_attn"]["w"], 3, axis=-1),
                              np.split(p["attn"]["c_attn"]["b"], 3, axis=-1)):
            setattr(getattr(block.att, name), "weight", assign(getattr(block.att, name).weight, w.T))
            setattr(getattr(block.att, name), "bias", assign(getattr(block.att, name).bias, b))
        for layer, source in ((block.att.out_proj, p["attn"]["c_proj"]), (block.ff.layers[0], p["mlp"]["c_fc"]),
                              (block.ff.layers[2], p["mlp"]["c_proj"])):
            layer.weight, layer.bias = assign(layer.weight, source["w"].T), assign(layer.bias, source["b"])
        for norm, key in ((block.norm1, "ln_1"), (block.norm2, "ln_2")):
            norm.scale, norm.shift = assign(norm.scale, p[key]["g"]), assign(norm.shift, p[key]["b"])
    gpt.final_norm.scale, gpt.final_norm.shift = assign(gpt.final_norm.scale, params["g"]), assign(gpt.final_norm.shift, params["b"])
    gpt.out_head.weight = assign(gpt.out_head.weight, params["wte"])
    assert (logits_of(gpt, tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4


def test_an_empty_or_wrong_params_dict_names_what_is_missing():
    gpt = GPTModel(CFG)
    with pytest.raises(ValueError, match="params lacks 'wte', 'wpe', 'blocks', 'g', 'b'"):
        load_weights_into_gpt(gpt, {})
    with pytest.raises(ValueError, match="looks like a PyTorch state dict"):
        load_weights_into_gpt(gpt, gpt.state_dict())
    with pytest.raises(TypeError, match="params must be the GPT-2 params dict"):
        load_weights_into_gpt(gpt, [1, 2])


def test_a_truncated_safetensors_file_names_the_file_and_the_fix(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    for cut in (len(data) // 2, 20):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError) as err:
            load_hf_gpt2_safetensors(path)
        assert str(path) in str(err.value) and "Delete it" in str(err.value)


def test_a_folder_passed_as_the_safetensors_file_points_to_gpt_from_hf_folder(hf_model, tokens, tmp_path):
    hf_model.save_pretrained(tmp_path)  # was safetensors' OSError "No such device"
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} is a folder: pass its model.safetensors, or load "
                                                   f"the folder with gpt_from_hf_folder('{tmp_path}')")):
        load_hf_gpt2_safetensors(tmp_path)
    gpt = gpt_from_hf_folder(tmp_path).eval()  # what the message suggests works
    assert (logits_of(gpt, tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4


def test_a_cut_short_or_incomplete_config_is_named_with_the_fix(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config)[:40])  # was json.JSONDecodeError
    with pytest.raises(ValueError, match=re.escape(f"{config_path} is not readable JSON") + ".*fetch it again"):
        gpt_from_hf_folder(tmp_path)
    del config["n_positions"]
    config_path.write_text(json.dumps(config))  # was KeyError 'n_positions'
    with pytest.raises(ValueError, match=r"config.json has no 'n_positions': is it a GPT-2 model's config.json\? "
                                         r"It needs vocab_size, n_positions, n_embd, n_head, n_layer"):
        gpt_from_hf_folder(tmp_path)
    with pytest.raises(ValueError, match=r"hparams.json has no 'n_ctx', 'n_layer'"):
        gpt_config_from_hparams({"n_vocab": 10, "n_embd": 8, "n_head": 2})
    assert gpt_config_from_hparams({"n_vocab": 10, "n_ctx": 4, "n_embd": 8, "n_head": 2, "n_layer": 1},
                                   drop_rate=0.1) == {"vocab_size": 10, "context_length": 4, "emb_dim": 8,
                                                      "n_heads": 2, "n_layers": 1, "drop_rate": 0.1, "qkv_bias": True}


def test_download_file_takes_the_books_backup_url(storage, tmp_path):
    from helpers.support.download import download_file

    storage.missing.add(("book-primary", "124M/hparams.json"))
    # the book's call: download_file(url, destination, backup_url)
    download_file(storage.base("book-primary") + "/124M/hparams.json", tmp_path / "hparams.json",
                  storage.base("book-backup") + "/124M/hparams.json")
    assert (tmp_path / "hparams.json").read_bytes() == (storage.root / "124M" / "hparams.json").read_bytes()
    assert ("book-backup", "124M/hparams.json", None) in storage.requests


# ---- FastGPTModel through the same loader and writer (its state dict has GPTModel's names) ----

def _params_of_hf(hf_model, folder):
    hf_model.save_pretrained(folder)
    return load_hf_gpt2_safetensors(folder / "model.safetensors")


def test_a_fast_model_loads_and_saves_gpt2_weights_like_gptmodel(hf_model, tokens, tmp_path):
    from helpers.fast import FastGPTModel
    params = _params_of_hf(hf_model, tmp_path)
    reference = hf_model(tokens).logits.detach()
    for fast in (FastGPTModel(CFG), FastGPTModel({**CFG, "tie_weights": True})):
        load_weights_into_gpt(fast, params)  # the fused qkv is filled through its W_query/W_key/W_value views
        assert (logits_of(fast.eval(), tokens) - reference).abs().max().item() <= 1e-4
        written = gpt_to_params(fast)
        assert written["blocks"][1]["attn"]["c_attn"]["w"].shape == params["blocks"][1]["attn"]["c_attn"]["w"].shape
        for path, _, _ in gpt2_weight_map(CFG["n_layers"]):
            assert torch.allclose(_lookup(written, path), _lookup(params, path)), path


def test_a_tied_model_refuses_a_checkpoint_with_its_own_output_head(hf_model, tmp_path):
    from helpers.fast import FastGPTModel
    params = _params_of_hf(hf_model, tmp_path)
    params["out_head"] = params["wte"] + 1  # a head that differs from the embedding
    tied = FastGPTModel({**CFG, "tie_weights": True})
    before = tied.tok_emb.weight.clone()
    with pytest.raises(ValueError, match="ties it to the token embedding; build it with tie_weights=False"):
        load_weights_into_gpt(tied, params)
    assert torch.equal(tied.tok_emb.weight, before)  # refused before anything was copied


def test_a_safetensors_file_without_a_gpt2_tensor_is_named(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "not-gpt2.safetensors"
    save_file({"transformer.h.0.ln_1.weight": torch.ones(4)}, str(path))
    with pytest.raises(ValueError, match="^" + re.escape(f"{path} has no tensor 'transformer.wte.weight'")):
        load_hf_gpt2_safetensors(path)


def test_a_model_with_wrapped_layers_is_named_not_blamed_on_qkv_bias(hf_model, tmp_path):
    """LoRA (ch06) renames W_query.weight to W_query.linear.weight: loading into, or reading from,
    such a model must name the missing weight, not report qkv_bias or write zeros."""
    from helpers.classification import LinearWithLoRA, replace_linear_with_lora
    params = _params_of_hf(hf_model, tmp_path)
    for qkv_bias in (True, False):
        wrapped = replace_linear_with_lora(GPTModel({**CFG, "qkv_bias": qkv_bias}), rank=2, alpha=1.0)
        with pytest.raises(ValueError, match=r"no 'trf_blocks.0.att.W_query.weight' \(and \d+ more\).*before wrapping"):
            load_weights_into_gpt(wrapped, params)
        with pytest.raises(ValueError, match=r"no 'trf_blocks.0.att.W_query.weight' .*merge them first"):
            gpt_to_params(wrapped)
    plain = GPTModel({**CFG, "qkv_bias": False})  # no biases at all: zeros are the right GPT-2 biases
    assert not gpt_to_params(plain)["blocks"][0]["attn"]["c_attn"]["b"].any()
    # one wrapped layer deep in the model: named, and refused before anything is copied
    partly = GPTModel(CFG)
    partly.trf_blocks[1].ff.layers[0] = LinearWithLoRA(partly.trf_blocks[1].ff.layers[0], rank=2, alpha=1.0)
    before = {k: v.clone() for k, v in partly.state_dict().items()}
    with pytest.raises(ValueError, match=r"^the model has no 'trf_blocks.1.ff.layers.0.weight' \(and 1 more\): "):
        load_weights_into_gpt(partly, params)
    assert all(torch.equal(v, before[k]) for k, v in partly.state_dict().items())


def test_a_compiled_model_loads_and_saves_gpt2_weights(hf_model, tokens, tmp_path):
    """torch.compile's wrapper prefixes every name with _orig_mod.; the model inside is used."""
    params = _params_of_hf(hf_model, tmp_path)
    inner = GPTModel(CFG)
    compiled = torch.compile(inner)  # lazy: nothing is compiled until it runs, which it does not here
    load_weights_into_gpt(compiled, params)
    assert (logits_of(inner.eval(), tokens) - hf_model(tokens).logits.detach()).abs().max().item() <= 1e-4
    written = gpt_to_params(compiled)
    for path, _, _ in gpt2_weight_map(CFG["n_layers"]):
        assert torch.allclose(_lookup(written, path), _lookup(params, path)), path


def _book_sized_loader():
    """5.5's book-sized `load_weights_into_gpt`, taken from the notebook cell that defines it (it is
    not exported: the package's loader is the table-driven one of Under the hood)."""
    import nbformat
    import numpy as np
    from helpers.weights import assign
    cells = nbformat.read(Path(__file__).parent.parent / "ch05_pretraining.ipynb", as_version=4).cells
    source, = [c.source for c in cells
               if c.cell_type == "code" and c.source.startswith("def load_weights_into_gpt(gpt, params):")]
    namespace = {"np": np, "assign": assign}
    exec(source, namespace)
    return namespace["load_weights_into_gpt"]


def test_book_sized_loader_of_5_5_loads_the_same_model_and_refuses_another_depth():
    book_loader = _book_sized_loader()
    torch.manual_seed(0)
    params = gpt_to_params(GPTModel(CFG))
    loaded = GPTModel(CFG)
    book_loader(loaded, params)
    reference = GPTModel(CFG)
    load_weights_into_gpt(reference, params)  # the exported loader: the same tensors, name for name
    ours, theirs = loaded.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not torch.equal(ours["trf_blocks.1.att.W_key.weight"], GPTModel(CFG).state_dict()["trf_blocks.1.att.W_key.weight"])
    # the same width with another depth: zip would stop at the shorter list without a word
    for n_layers in (1, 3):
        with pytest.raises(ValueError, match=rf"^the checkpoint has 2 blocks, the model {n_layers}: build the model"):
            book_loader(GPTModel({**CFG, "n_layers": n_layers}), params)
