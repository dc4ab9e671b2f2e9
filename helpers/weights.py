"""weights: generated from ch05_pretraining.ipynb, ch06_classification.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export weights` and run `make export`.
"""
__all__ = ['assign', 'GPT2_SIZES', 'GPT2_HF_REPOS', 'download_gpt2_safetensors', 'gpt_config_from_hf', 'GPT2_TOP_LEVEL', 'GPT2_PER_BLOCK', 'gpt2_weight_map', 'tf_name', 'hf_name', 'load_weights_into_gpt', 'load_hf_gpt2_safetensors', 'gpt_from_hf_folder', 'gpt_to_params', 'save_gpt_as_hf', 'GPT2_FILES', 'GPT2_BASE_URLS', 'download_and_load_gpt2', 'load_gpt2_params_from_tf_ckpt', 'gpt_config_from_hparams', 'load_pretrained_gpt2']


# ---- ch05_pretraining.ipynb, cell 78 ----
import numpy as np
import torch


def assign(left, right):
    """`right` (a NumPy array or tensor) as a new Parameter to put in place of `left`, once its
    shape is checked; in `left`'s dtype and on its device (the book's `assign`)."""
    right = right if torch.is_tensor(right) else torch.as_tensor(np.asarray(right))
    if tuple(left.shape) != tuple(right.shape):
        raise ValueError(f"shape mismatch: the model's tensor is {tuple(left.shape)}, the checkpoint's "
                         f"{tuple(right.shape)}; build the model with the checkpoint's config")
    return torch.nn.Parameter(right.detach().to(device=left.device, dtype=left.dtype).clone())


# ---- ch05_pretraining.ipynb, cell 177 ----
import json
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from helpers.model import GPTModel
from helpers.support.download import download_file

GPT2_SIZES = ("124M", "355M", "774M", "1558M")
# Hugging Face's copies of OpenAI's four GPT-2 releases (the same weights, as safetensors).
GPT2_HF_REPOS = {"124M": "openai-community/gpt2", "355M": "openai-community/gpt2-medium",
                 "774M": "openai-community/gpt2-large", "1558M": "openai-community/gpt2-xl"}


def download_gpt2_safetensors(model_size, cache_dir=None, endpoint=None):
    """Fetch `model.safetensors` and `config.json` of GPT-2 `model_size` from the Hugging Face
    hub (once; later calls read huggingface_hub's cache); returns the folder holding both.

    `endpoint` defaults to huggingface_hub's (the HF_ENDPOINT variable, else huggingface.co).
    Raises ConnectionError at once when the hub cannot be reached, instead of the hub
    client's half-minute of retries.
    """
    from huggingface_hub import constants, hf_hub_download

    if model_size not in GPT2_HF_REPOS:
        raise ValueError(f"unknown GPT-2 size {model_size!r}; choose one of {', '.join(GPT2_HF_REPOS)}")
    repo, endpoint = GPT2_HF_REPOS[model_size], endpoint or constants.ENDPOINT
    url = urllib.parse.urlsplit(endpoint)
    # A direct connection tells at once that the machine is offline; behind a proxy (HTTPS_PROXY)
    # it would fail where the hub client, which goes through the proxy, gets through.
    proxied = url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(url.hostname)
    if not constants.HF_HUB_OFFLINE and not proxied:
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
        except OSError:
            raise ConnectionError(f"cannot reach {url.hostname} (offline?)") from None
    hf_hub_download(repo, "config.json", cache_dir=cache_dir, endpoint=endpoint)
    return Path(hf_hub_download(repo, "model.safetensors", cache_dir=cache_dir, endpoint=endpoint)).parent


def gpt_config_from_hf(config):
    """A GPTModel config for a Hugging Face GPT-2 config.json (dict); qkv biases as in GPT-2."""
    vocab, context, emb, heads, layers = _config_values(
        config, ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer"), "config.json")
    return {"vocab_size": vocab, "context_length": context, "emb_dim": emb, "n_heads": heads, "n_layers": layers,
            "drop_rate": 0.0, "qkv_bias": True}


def _config_values(config, keys, source):
    """config[key] for each key; a missing one is named (else a bare KeyError)."""
    missing = [key for key in keys if key not in config]
    if missing:
        raise ValueError(f"{source} has no {', '.join(map(repr, missing))}: is it a GPT-2 model's {source}? "
                         f"It needs {', '.join(keys)}")
    return [config[key] for key in keys]


def _read_json(path):
    """A JSON file's contents; one cut short (a JSONDecodeError before) is named, with the fix."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}): probably cut short by an interrupted download "
                         f"or copy; fetch it again") from None


# ---- ch05_pretraining.ipynb, cell 179 ----
# One row per GPT-2 tensor: its path in the book's `params` dict (OpenAI's layout: per block
# "blocks/<i>/...", the final LayerNorm as "g" and "b"), the parameter(s) of our GPTModel it
# fills, and whether GPT-2 stores it as (in, out), the transpose of nn.Linear's (out, in).
# c_attn holds the query, key and value projections side by side.
GPT2_TOP_LEVEL = [
    ("wte", "tok_emb.weight", False),
    ("wpe", "pos_emb.weight", False),
    ("g", "final_norm.scale", False),
    ("b", "final_norm.shift", False),
]
GPT2_PER_BLOCK = [
    ("attn/c_attn/w", ("att.W_query.weight", "att.W_key.weight", "att.W_value.weight"), True),
    ("attn/c_attn/b", ("att.W_query.bias", "att.W_key.bias", "att.W_value.bias"), False),
    ("attn/c_proj/w", "att.out_proj.weight", True),
    ("attn/c_proj/b", "att.out_proj.bias", False),
    ("mlp/c_fc/w", "ff.layers.0.weight", True),
    ("mlp/c_fc/b", "ff.layers.0.bias", False),
    ("mlp/c_proj/w", "ff.layers.2.weight", True),
    ("mlp/c_proj/b", "ff.layers.2.bias", False),
    ("ln_1/g", "norm1.scale", False),
    ("ln_1/b", "norm1.shift", False),
    ("ln_2/g", "norm2.scale", False),
    ("ln_2/b", "norm2.shift", False),
]


def gpt2_weight_map(n_layers):
    """The table for a model of `n_layers` blocks: (params path, our name(s), transposed) rows."""
    rows = list(GPT2_TOP_LEVEL)
    for i in range(n_layers):
        for path, ours, transposed in GPT2_PER_BLOCK:
            ours = tuple(f"trf_blocks.{i}.{o}" for o in ours) if isinstance(ours, tuple) else f"trf_blocks.{i}.{ours}"
            rows.append((f"blocks/{i}/{path}", ours, transposed))
    return rows


# ---- ch05_pretraining.ipynb, cell 181 ----
def tf_name(path):
    """OpenAI's TensorFlow variable name: "blocks/3/attn/c_attn/w" -> "model/h3/attn/c_attn/w"."""
    if path in ("g", "b"):
        return f"model/ln_f/{path}"
    if path.startswith("blocks/"):
        _, i, rest = path.split("/", 2)
        return f"model/h{i}/{rest}"
    return f"model/{path}"


def hf_name(path):
    """Hugging Face's tensor name: "blocks/3/ln_1/g" -> "transformer.h.3.ln_1.weight"."""
    if path in ("wte", "wpe"):
        return f"transformer.{path}.weight"
    *parts, last = (f"ln_f/{path}" if path in ("g", "b") else path.replace("blocks/", "h/", 1)).split("/")
    return "transformer." + ".".join(parts + [{"w": "weight", "g": "weight", "b": "bias"}[last]])


def _lookup(params, path):
    value = params
    for key in path.split("/"):
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError):
            raise ValueError(f"the checkpoint has no tensor {path!r}: is it a GPT-2 checkpoint, "
                             f"and does the model have the same number of layers?") from None
    return value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))  # NumPy has no bfloat16


def _store(params, path, value):
    *keys, last = path.split("/")
    for key in keys:
        params = params[int(key)] if isinstance(params, list) else params.setdefault(key, {})
    params[last] = value


# ---- ch05_pretraining.ipynb, cell 185 ----
def _check_shape(target, value, name):
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"shape mismatch for {name}: the checkpoint has {tuple(value.shape)}, the model "
                         f"expects {tuple(target.shape)}. Build the model with the checkpoint's config "
                         f"(gpt_config_from_hparams or gpt_config_from_hf); the model is unchanged.")


def _copy_checked(target, value, name):
    _check_shape(target, value, name)
    with torch.no_grad():
        target.copy_(value.to(dtype=target.dtype, device=target.device))


def _check_params(params):
    """Name what a GPT-2 params dict lacks, instead of a bare KeyError deep in the loader."""
    source = "load_hf_gpt2_safetensors, load_gpt2_params_from_tf_ckpt or download_and_load_gpt2"
    if not isinstance(params, dict):
        raise TypeError(f"params must be the GPT-2 params dict (from {source}), got {type(params).__name__}")
    missing = [k for k in ("wte", "wpe", "blocks", "g", "b") if k not in params]
    if missing:
        hint = ("; it looks like a PyTorch state dict, which model.load_state_dict reads"
                if any("." in str(k) for k in params) else "")
        raise ValueError(f"params lacks {', '.join(map(repr, missing))}: load_weights_into_gpt takes the GPT-2 "
                         f"params dict (from {source}){hint}")


_QKV_BIASES = (".W_query.bias", ".W_key.bias", ".W_value.bias")  # absent when qkv_bias=False


def _gpt_state(gpt, fix):
    """(model, its state dict) once the dict has every tensor of `gpt2_weight_map`'s rows; a
    compiled model gives the model inside (same parameters, names without "_orig_mod.")."""
    gpt = getattr(gpt, "_orig_mod", gpt)
    ours = gpt.state_dict()
    needed = [n for _, names, _ in gpt2_weight_map(len(gpt.trf_blocks))
              for n in ([names] if isinstance(names, str) else names)] + ["out_head.weight"]
    missing = [n for n in needed if n not in ours and not n.endswith(_QKV_BIASES)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"the model has no {missing[0]!r}{more}: GPT-2's weights map onto a plain GPTModel or "
                         f"FastGPTModel; wrappers such as LoRA rename its layers, so {fix}")
    return gpt, ours


def load_weights_into_gpt(gpt, params):
    """Copy GPT-2 weights (the params dict of `load_hf_gpt2_safetensors`,
    `load_gpt2_params_from_tf_ckpt` or `download_and_load_gpt2`) into our GPTModel, row by row of
    `gpt2_weight_map`, checking every shape. `out_head` gets a copy of `wte`, as GPT-2 ties the
    two (unless the dict holds a separate "out_head", as a model trained here has). A
    FastGPTModel works too: its state dict has GPTModel's names, as views of its fused weights."""
    _check_params(params)
    gpt, ours = _gpt_state(gpt, "load the weights before wrapping")  # ours: tensors sharing the parameters' memory
    if len(params["blocks"]) != len(gpt.trf_blocks):
        raise ValueError(f"the checkpoint has {len(params['blocks'])} transformer blocks, the model "
                         f"{len(gpt.trf_blocks)}: build the model with the checkpoint's n_layers")
    if "out_head" in params and gpt.out_head.weight is gpt.tok_emb.weight:
        raise ValueError("the checkpoint has an output head of its own, but this model ties it to the token "
                         "embedding; build it with tie_weights=False")
    copies = []  # (target, value, name): all checked before the first copy, so a refusal changes nothing
    for path, names, transposed in gpt2_weight_map(len(gpt.trf_blocks)):
        value = _lookup(params, path)
        value = value.T if transposed else value
        if isinstance(names, str):
            copies.append((ours[names], value, path))
        elif names[0] in ours:  # query, key, value: split c_attn in three
            copies += [(ours[name], part, f"{path} ({name.rsplit('.', 2)[-2]})")
                       for name, part in zip(names, torch.chunk(value, 3, dim=0))]
        elif value.abs().max() > 0:
            raise ValueError("the checkpoint has query/key/value biases, but the model was built with "
                             "qkv_bias=False; build it with qkv_bias=True (as OpenAI's GPT-2 uses); the model is unchanged")
    head = "out_head" if "out_head" in params else "wte"
    copies.append((gpt.out_head.weight, _lookup(params, head), f"{head} (output head)"))
    for target, value, name in copies:
        _check_shape(target, value, name)
    for target, value, name in copies:
        _copy_checked(target, value, name)


# ---- ch05_pretraining.ipynb, cell 189 ----
def load_hf_gpt2_safetensors(path):
    """Read GPT-2 weights in Hugging Face's layout (`model.safetensors` of openai-community/gpt2,
    gpt2-medium, gpt2-large, gpt2-xl, or of `save_pretrained`) into the same dict as
    `load_gpt2_params_from_tf_ckpt`, so `load_weights_into_gpt` serves both. No TensorFlow needed;
    safetensors holds raw tensors only, so nothing is unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if Path(path).is_dir():  # load_file says "No such device" for a folder
        raise ValueError(f"{path} is a folder: pass its model.safetensors, or load the folder with "
                         f"gpt_from_hf_folder({str(path)!r})")
    # The hub's own files name tensors without the "transformer." prefix that save_pretrained adds.
    try:
        raw = load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}): it was probably cut short by an "
                         f"interrupted download or copy. Delete it and fetch it again (for Hugging Face's copy: remove "
                         f"the model from huggingface_hub's cache, `hf cache delete`, then download_gpt2_safetensors)."
                         ) from None
    tensors = {k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}": v for k, v in raw.items()}
    n_layers = len({k.split(".")[2] for k in tensors if k.startswith("transformer.h.")})
    params = {"blocks": [{} for _ in range(n_layers)]}
    for row, _, _ in gpt2_weight_map(n_layers):
        if hf_name(row) not in tensors:
            raise ValueError(f"{path} has no tensor {hf_name(row)!r}: is it a GPT-2 checkpoint?")
        _store(params, row, tensors[hf_name(row)])
    if "lm_head.weight" in tensors and not torch.equal(tensors["lm_head.weight"], params["wte"]):
        params["out_head"] = tensors["lm_head.weight"]
    return params


def gpt_from_hf_folder(folder, drop_rate=0.0):
    """A GPTModel built from a Hugging Face GPT-2 folder's config.json and filled with its
    model.safetensors (the hub's download, or what `save_gpt_as_hf` wrote)."""
    config = _read_json(Path(folder) / "config.json")
    gpt = GPTModel({**gpt_config_from_hf(config), "drop_rate": drop_rate})
    load_weights_into_gpt(gpt, load_hf_gpt2_safetensors(Path(folder) / "model.safetensors"))
    return gpt


# ---- ch05_pretraining.ipynb, cell 190 ----
def gpt_to_params(gpt):
    """The inverse of `load_weights_into_gpt`: our model's weights as a GPT-2 params dict of
    float32 CPU tensors in OpenAI's layout (zero query/key/value biases if it has none)."""
    gpt, ours = _gpt_state(gpt, "merge them first (merge_lora)")
    ours = {k: v.detach().float().cpu() for k, v in ours.items()}  # GPTModel's names
    zeros = torch.zeros(gpt.tok_emb.weight.shape[1])  # the biases of a model without qkv_bias
    params = {"blocks": [{} for _ in gpt.trf_blocks]}
    for path, names, transposed in gpt2_weight_map(len(gpt.trf_blocks)):
        value = ours[names] if isinstance(names, str) else torch.cat([ours.get(n, zeros) for n in names])
        _store(params, path, value.T.contiguous() if transposed else value)
    if not torch.equal(gpt.out_head.weight, gpt.tok_emb.weight):
        params["out_head"] = ours["out_head.weight"]
    return params


def save_gpt_as_hf(gpt, out_dir):
    """Write our model as a Hugging Face GPT-2 folder (model.safetensors + config.json) that
    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` and `gpt_from_hf_folder` load. An
    output head that differs from the token embedding is saved as lm_head, untied."""
    from safetensors.torch import save

    from helpers.support.files import write_atomically_together

    params = gpt_to_params(gpt)
    tensors = {hf_name(path): _lookup(params, path).contiguous() for path, _, _ in gpt2_weight_map(len(gpt.trf_blocks))}
    tied = "out_head" not in params
    if not tied:
        tensors["lm_head.weight"] = params["out_head"]
    cfg = gpt.cfg
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg["vocab_size"],
              "n_positions": cfg["context_length"], "n_embd": cfg["emb_dim"], "n_layer": cfg["n_layers"],
              "n_head": cfg["n_heads"], "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "resid_pdrop": cfg["drop_rate"], "embd_pdrop": cfg["drop_rate"], "attn_pdrop": cfg["drop_rate"],
              "tie_word_embeddings": tied, "bos_token_id": 50256, "eos_token_id": 50256}
    # Both files are written in full before either replaces its old version, so an interrupted
    # save never pairs new weights with an old config (the weights pass through memory once
    # more as bytes).
    out_dir = Path(out_dir)
    write_atomically_together([
        (out_dir / "model.safetensors", lambda f: f.write(save(tensors, metadata={"format": "pt"})), "wb"),
        (out_dir / "config.json", lambda f: f.write(json.dumps(config, indent=2)), "w")])
    return out_dir


# ---- ch05_pretraining.ipynb, cell 192 ----
GPT2_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
              "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
# OpenAI's storage first, then a mirror of the same files kept for the book's readers.
GPT2_BASE_URLS = ("https://openaipublic.blob.core.windows.net/gpt-2/models",
                  "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2")


def download_and_load_gpt2(model_size, models_dir, base_urls=GPT2_BASE_URLS, **download_options):
    """The book's route: download OpenAI's GPT-2 checkpoint of `model_size` into
    models_dir/model_size (once; a broken download resumes) and read it with TensorFlow;
    returns (settings, params).

    settings: the model's hparams.json (n_vocab, n_ctx, n_embd, n_head, n_layer).
    params: the weights as NumPy arrays, see `load_gpt2_params_from_tf_ckpt`.
    `download_options` go to `download_file` (retries, timeout, progress, ...).
    """
    if model_size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {model_size!r}; choose one of {', '.join(GPT2_SIZES)}")
    model_dir = Path(models_dir) / model_size
    for name in GPT2_FILES:
        download_file([f"{base}/{model_size}/{name}" for base in base_urls], model_dir / name, **download_options)
    settings = _read_json(model_dir / "hparams.json")
    return settings, load_gpt2_params_from_tf_ckpt(model_dir, settings)


def _import_tensorflow():
    """Import TensorFlow without its start-up log lines, which its C++ core writes straight to
    the process's stderr (so Python cannot filter them) and which say nothing useful here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        tf.constant(0)  # the first op triggers the rest of the start-up messages
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf


# ---- ch05_pretraining.ipynb, cell 193 ----
def load_gpt2_params_from_tf_ckpt(ckpt_path, settings):
    """Read a GPT-2 TensorFlow checkpoint (a folder with a `checkpoint` file, or a checkpoint
    prefix such as .../model.ckpt) into nested dicts of NumPy arrays, one per row of
    `gpt2_weight_map`: {"wte", "wpe", "blocks": [{"attn": {"c_attn": {"w", "b"}, ...}, ...}], "g", "b"}.
    Needs TensorFlow, which is imported here only, so that everything else works without it."""
    try:
        tf = _import_tensorflow()
    except ImportError:
        raise ImportError("reading OpenAI's original checkpoint needs TensorFlow (pip install tensorflow-cpu); "
                          "without it, load the same weights from Hugging Face's model.safetensors with "
                          "download_gpt2_safetensors and gpt_from_hf_folder") from None
    ckpt_path = str(ckpt_path)
    if os.path.isdir(ckpt_path):
        found = tf.train.latest_checkpoint(ckpt_path)
        if found is None:
            raise FileNotFoundError(f"no TensorFlow checkpoint in {ckpt_path} (its `checkpoint` file is missing)")
        ckpt_path = found
    available = dict(tf.train.list_variables(ckpt_path))
    params = {"blocks": [{} for _ in range(settings["n_layer"])]}
    for path, _, _ in gpt2_weight_map(settings["n_layer"]):
        if tf_name(path) not in available:
            raise ValueError(f"the checkpoint has no variable {tf_name(path)!r}: is it a GPT-2 checkpoint "
                             f"with {settings['n_layer']} layers?")
        array = tf.train.load_variable(ckpt_path, tf_name(path))
        _store(params, path, array[0] if array.ndim == 3 else array)  # OpenAI's conv weights are (1, in, out)
    return params


def gpt_config_from_hparams(settings, drop_rate=0.0):
    """A GPTModel config for a checkpoint's hparams.json (OpenAI's models have qkv biases)."""
    vocab, context, emb, heads, layers = _config_values(
        settings, ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"), "hparams.json")
    return {"vocab_size": vocab, "context_length": context, "emb_dim": emb, "n_heads": heads, "n_layers": layers,
            "drop_rate": drop_rate, "qkv_bias": True}


# ---- ch06_classification.ipynb, cell 153 ----
import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
import time
import uuid

from helpers.model import GPT_CONFIGS, GPTModel, _check_gpt_config, _is_count
from helpers.support.data import fetch
from helpers.support.download import DownloadError, LocalWriteError
from helpers.support.files import _current_umask


def _pretrain_standin(cfg, data_dir, device, num_epochs, seed=123):
    """Chapter 5's run (The Verdict, batch 2, AdamW 4e-4 / 0.1) for a model of shape `cfg`;
    prints its losses at the end."""
    from tqdm.auto import tqdm

    from helpers.support.data import gpt2_tokenizer
    from helpers.text import create_dataloader_v1
    from helpers.training import evaluate_model, train_model_simple

    tokenizer = gpt2_tokenizer(data_dir)
    text = fetch("the-verdict.txt", data_dir).read_text(encoding="utf-8")
    split, ctx = int(0.9 * len(text)), cfg["context_length"]
    held_out = len(tokenizer.encode(text[split:]))
    if held_out <= ctx:  # the validation loader needs one window of ctx + 1 tokens
        raise ValueError(f"standin_cfg['context_length']={ctx} is too long for The Verdict: its held-out 10% has "
                         f"{held_out} tokens; use {held_out - 1} or less (GPT-2's 1,024 needs OpenAI's weights)")
    torch.manual_seed(seed)
    train_loader = create_dataloader_v1(text[:split], batch_size=2, max_length=ctx, stride=ctx,
                                        shuffle=True, drop_last=True, tokenizer=tokenizer)
    val_loader = create_dataloader_v1(text[split:], batch_size=2, max_length=ctx, stride=ctx,
                                      shuffle=False, drop_last=False, tokenizer=tokenizer)
    torch.manual_seed(seed)
    gpt = GPTModel(cfg).to(device)
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=4e-4, weight_decay=0.1)
    bar = tqdm(total=num_epochs * len(train_loader), desc="pretraining the stand-in", unit="step")

    def show(step, loss):  # called before each update; draws no random numbers: the same weights
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")

    # its own bar: the loop's would end on the losses of its only evaluation, after the first step
    with bar, contextlib.redirect_stdout(io.StringIO()):  # its per-epoch samples are chapter 5's story
        train_model_simple(gpt, train_loader, val_loader, optimizer, device, num_epochs=num_epochs,
                           eval_freq=10**9, eval_iter=1, start_context="Every effort moves you",
                           tokenizer=tokenizer, progress=False, before_update=show)
    train_loss, val_loss = evaluate_model(gpt, train_loader, val_loader, device, eval_iter=None)
    print(f"Its loss at the end of pretraining: {train_loss:.3f} on the text it trained on, "
          f"{val_loss:.3f} on the story's held-out last 10%")
    return gpt


# ---- ch06_classification.ipynb, cell 155 ----
from helpers.support.runtime import is_out_of_memory


def _short(err, limit=110):
    """An error (or its text) as one line of at most about `limit` characters, cut between words."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    line = first if isinstance(err, str) else f"{type(err).__name__}: {first}" if first else type(err).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " ..."


def _remove_stale_leftovers(folder, age_s=3600):
    """Delete the `.building-*` and `.old-*` folders that a killed build left beside `folder`.

    Only those untouched for `age_s`: a build writes its folder in seconds, so a younger one may
    belong to a build running now in another process."""
    removed, kept = [], []
    for pattern in (f".{folder.name}.building-*", f".{folder.name}.old-*"):
        for p in folder.parent.glob(pattern):
            try:
                if time.time() - p.stat().st_mtime > age_s:
                    shutil.rmtree(p, ignore_errors=True)
                    (kept if p.exists() else removed).append(p)
            except FileNotFoundError:  # another process removed it meanwhile
                pass
    if removed:
        print(f"Removed {len(removed)} folder(s) left by an interrupted stand-in build beside {folder}")
    if kept:  # no permission, say: the user must know what still takes the space
        print(f"Could not remove {len(kept)} folder(s) left by an interrupted stand-in build; delete them by hand: "
              + ", ".join(map(str, kept)))


def _load_standin(cfg, num_epochs, models_dir, data_dir, device, drop_rate):
    """(model, shape name) of the stand-in of shape `cfg`: loaded from models_dir, or built there
    when it is missing or cannot be loaded (half-written, truncated, damaged)."""
    shape = f"{cfg['n_layers']}x{cfg['emb_dim']}x{cfg['n_heads']}-ctx{cfg['context_length']}-ep{num_epochs}"
    # what else changes the pretrained weights, named only where it departs from GPT-2's config
    # (which every size shares), so GPT-2's own shapes keep short names
    gpt2 = GPT_CONFIGS["124M"]
    shape += f"-vocab{cfg['vocab_size']}" * (cfg["vocab_size"] != gpt2["vocab_size"])
    shape += "-qkvbias" * (bool(cfg["qkv_bias"]) != gpt2["qkv_bias"])  # GPT_CONFIGS' sizes have none
    shape += f"-drop{cfg['drop_rate']:g}" * (cfg["drop_rate"] != gpt2["drop_rate"])
    folder = Path(models_dir) / f"standin-{shape}"
    _remove_stale_leftovers(folder)  # a missing models_dir has none: its glob finds nothing
    if folder.exists():
        try:
            return gpt_from_hf_folder(folder, drop_rate), shape
        except Exception as e:  # any failure to load but a lack of memory means: this copy is unusable
            if is_out_of_memory(e):  # the copy may be fine, and a rebuild would need the memory too
                raise
            # kept until the new one is built: a failed or interrupted build loses nothing
            print(f"The stand-in in {folder} cannot be loaded ({_short(e, 80)}); building it again.")
    print(f"Pretraining a stand-in ({shape}) on The Verdict with chapter 5's recipe; kept in {folder}")
    t0 = time.perf_counter()
    # on a fork of the random state: building draws many numbers, and the caller's next draws
    # (a loader's shuffle, a sample) must not depend on whether the stand-in was built or loaded
    with torch.random.fork_rng():
        gpt = _pretrain_standin(cfg, data_dir, device, num_epochs)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.building-"))
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:12]}")  # never an earlier run's leftover
    try:
        save_gpt_as_hf(gpt, building)
        os.chmod(building, 0o777 & ~_current_umask())  # mkdtemp's folder is private (0700); the copy is not
        if folder.exists():  # the unusable copy: moved aside, deleted once the new one is in place
            os.utime(folder)  # a fresh time, so that no other build takes it for a stale leftover
            os.replace(folder, old)
        os.replace(building, folder)  # the folder appears whole, or not at all
    finally:
        shutil.rmtree(building, ignore_errors=True)
        if old.exists():
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # the new copy never arrived: the old one goes back
                os.replace(old, folder)
    print(f"The stand-in took {(time.perf_counter() - t0) / 60:.1f} minutes to build.")
    return gpt_from_hf_folder(folder, drop_rate), shape


# ---- ch06_classification.ipynb, cell 157 ----
def load_pretrained_gpt2(model_size="124M", models_dir="models", *, download=True, standin_cfg=None,
                         standin_epochs=10, data_dir=None, device="cpu", drop_rate=0.0):
    """A pretrained GPT-2 to finetune; returns (model, weights), the model in eval mode on `device`.

    `weights` says where the weights came from: "openai" (OpenAI's GPT-2 from Hugging Face's
    safetensors copy or, with TensorFlow installed, OpenAI's checkpoint; tried only with
    `download`) or "standin": a model of shape `standin_cfg` (default: GPT-2 `model_size` with
    a 256-token context; OpenAI's has 1,024) pretrained on The Verdict with chapter 5's recipe
    for `standin_epochs` epochs, built on first use (for the 124M shape, 10 epochs take minutes
    on a 2-core CPU; the build prints its time; its context must stay below the 534 tokens of
    The Verdict's held-out 10%), kept in
    models_dir/standin-<shape>/ and built again if that copy cannot be loaded. It knows one short story: enough to see
    every finetuning mechanism work, not to match the book's accuracy. `model.cfg` is its config.
    """
    if model_size not in GPT2_HF_REPOS:
        raise ValueError(f"unknown GPT-2 size {model_size!r}; choose one of {', '.join(GPT2_HF_REPOS)}")
    if not 0 <= drop_rate < 1:  # also refuses NaN
        raise ValueError(f"drop_rate={drop_rate!r} must be in [0, 1) (0.0 to finetune, as the book does)")
    if not _is_count(standin_epochs, 1):
        raise ValueError(f"standin_epochs={standin_epochs!r} must be a whole number >= 1 (10: chapter 5's run)")
    if standin_cfg is not None:  # checked before any download: a KeyError later would name no argument
        try:
            standin_cfg = _check_gpt_config(standin_cfg)
        except (KeyError, ValueError) as e:
            raise ValueError(f"standin_cfg: {e.args[0]}") from None
    if download:
        gpt = None
        try:
            gpt = gpt_from_hf_folder(download_gpt2_safetensors(model_size), drop_rate)
            print(f"Weights: openai (OpenAI's GPT-2 {model_size} from Hugging Face's {GPT2_HF_REPOS[model_size]}); "
                  f"context {gpt.cfg['context_length']} tokens.")
        except LocalWriteError:  # a full disk: no other route fixes that
            raise
        except Exception as e:  # offline, hub down, huggingface_hub missing: each means "not this route"
            if is_out_of_memory(e):  # nor does another route fix too little memory (MemoryError, or torch's RuntimeError)
                raise
            print(f"Hugging Face download of GPT-2 {model_size} failed: {_short(e)}")
        if gpt is None and importlib.util.find_spec("tensorflow") is not None:
            try:
                settings, params = download_and_load_gpt2(model_size, models_dir, retries=1)
                gpt = GPTModel(gpt_config_from_hparams(settings, drop_rate=drop_rate))
                load_weights_into_gpt(gpt, params)
                print(f"Weights: openai (OpenAI's GPT-2 {model_size}, its TensorFlow checkpoint); "
                      f"context {gpt.cfg['context_length']} tokens.")
            except LocalWriteError:
                raise
            except DownloadError as e:
                lines = str(e).splitlines() or [""]
                reason = lines[min(1, len(lines) - 1)].strip().split(": ", 1)[-1]  # "URL: why" -> "why"
                print(f"OpenAI download of GPT-2 {model_size} failed: {_short(reason)}")
            except Exception as e:  # the files are there but unreadable: a damaged copy, an old TensorFlow, ...
                if is_out_of_memory(e):
                    raise
                print(f"OpenAI's GPT-2 {model_size} checkpoint in {Path(models_dir) / model_size} could not be "
                      f"read with TensorFlow ({_short(e)}); if its files are damaged, delete that folder to "
                      f"download them again")
                gpt = None
        if gpt is not None:  # moved to the device outside the tries: a GPU out of memory is no failed download
            return gpt.to(device).eval(), "openai"
    cfg = {**GPT_CONFIGS[model_size], "context_length": 256} if standin_cfg is None else dict(standin_cfg)
    gpt, shape = _load_standin(cfg, standin_epochs, models_dir, data_dir, device, drop_rate)
    print(f"Weights: standin, NOT OpenAI's GPT-2: a {shape} model pretrained on The Verdict only; "
          f"context {cfg['context_length']} tokens (OpenAI's GPT-2: 1,024).")
    return gpt.to(device).eval(), "standin"
