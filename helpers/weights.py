"""weights: generated from ch05_pretraining.ipynb. DO NOT EDIT.

Edit the notebook cells that start with `#| export weights` and run `make export`.
"""
__all__ = ['GPT2_SIZES', 'GPT2_FILES', 'GPT2_BASE_URLS', 'download_and_load_gpt2', 'load_gpt2_params_from_tf_ckpt', 'gpt_config_from_hparams', 'load_weights_into_gpt', 'load_hf_gpt2_safetensors', 'gpt_to_params', 'save_gpt_as_hf', 'save_gpt_as_tf_checkpoint']


# ---- ch05_pretraining.ipynb, cell 60 ----
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from helpers.support.data import fetch
from helpers.support.download import download_file


GPT2_SIZES = ("124M", "355M", "774M", "1558M")
GPT2_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
              "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
# OpenAI's storage first, then a mirror of the same files kept for the book's readers.
GPT2_BASE_URLS = ("https://openaipublic.blob.core.windows.net/gpt-2/models",
                  "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2")


def download_and_load_gpt2(model_size, models_dir, base_urls=GPT2_BASE_URLS, **download_options):
    """Download OpenAI's GPT-2 checkpoint of `model_size` into models_dir/model_size (once; a
    broken download resumes) and read it; returns (settings, params).

    settings: the model's hparams.json (n_vocab, n_ctx, n_embd, n_head, n_layer).
    params: the weights as NumPy arrays, see `load_gpt2_params_from_tf_ckpt`.
    `download_options` go to `download_file` (retries, timeout, progress, ...).
    """
    if model_size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {model_size!r}; choose one of {', '.join(GPT2_SIZES)}")
    model_dir = Path(models_dir) / model_size
    for name in GPT2_FILES:
        download_file([f"{base}/{model_size}/{name}" for base in base_urls], model_dir / name, **download_options)
    settings = json.loads((model_dir / "hparams.json").read_text(encoding="utf-8"))
    return settings, load_gpt2_params_from_tf_ckpt(model_dir, settings)


# ---- ch05_pretraining.ipynb, cell 61 ----
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


def load_gpt2_params_from_tf_ckpt(ckpt_path, settings):
    """Read a GPT-2 TensorFlow checkpoint (a folder with a `checkpoint` file, or a checkpoint
    prefix such as .../model.ckpt) into nested dicts of NumPy arrays:
    {"wte", "wpe", "blocks": [{"attn": {"c_attn": {"w", "b"}, "c_proj": ...}, "mlp": {"c_fc", "c_proj"},
    "ln_1": {"g", "b"}, "ln_2": ...}, ...], "g", "b"} (the last two: the final LayerNorm).
    Needs TensorFlow, which is imported here only, so that everything else works without it."""
    try:
        tf = _import_tensorflow()
    except ImportError:
        raise ImportError("reading OpenAI's original checkpoint needs TensorFlow (pip install tensorflow-cpu); "
                          "without it, load the same weights from Hugging Face's model.safetensors with "
                          "load_hf_gpt2_safetensors") from None
    ckpt_path = str(ckpt_path)
    if os.path.isdir(ckpt_path):
        found = tf.train.latest_checkpoint(ckpt_path)
        if found is None:
            raise FileNotFoundError(f"no TensorFlow checkpoint in {ckpt_path} (its `checkpoint` file is missing)")
        ckpt_path = found
    params = {"blocks": [{} for _ in range(settings["n_layer"])]}
    for name, _ in tf.train.list_variables(ckpt_path):
        array = np.squeeze(tf.train.load_variable(ckpt_path, name))  # OpenAI's conv weights are (1, in, out)
        parts = name.split("/")[1:]  # drop the leading "model/"
        target = params
        if parts[0].startswith("h") and parts[0][1:].isdigit():
            target = params["blocks"][int(parts[0][1:])]
            parts = parts[1:]
        for key in parts[:-1]:
            target = target.setdefault(key, {})
        target[parts[-1]] = array
    if "ln_f" in params:  # the final LayerNorm lives at the top level, as "g" and "b"
        params.update(params.pop("ln_f"))
    return params


def gpt_config_from_hparams(settings, drop_rate=0.0):
    """A GPTModel config for a checkpoint's hparams.json (OpenAI's models have qkv biases)."""
    return {"vocab_size": settings["n_vocab"], "context_length": settings["n_ctx"],
            "emb_dim": settings["n_embd"], "n_heads": settings["n_head"], "n_layers": settings["n_layer"],
            "drop_rate": drop_rate, "qkv_bias": True}


# ---- ch05_pretraining.ipynb, cell 63 ----
def _lookup(params, path):
    value = params
    for key in path.split("/"):
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError):
            raise ValueError(f"the checkpoint has no tensor {path!r}: is it a GPT-2 checkpoint, "
                             f"and does the model have the same number of layers?") from None
    return torch.as_tensor(np.asarray(value))


def _assign(target, value, name):
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"shape mismatch for {name}: the checkpoint has {tuple(value.shape)}, the model "
                         f"expects {tuple(target.shape)}. Build the model with the checkpoint's config "
                         f"(gpt_config_from_hparams; emb_dim, n_layers, n_heads, context_length, vocab_size).")
    with torch.no_grad():
        target.copy_(value.to(dtype=target.dtype, device=target.device))


def load_weights_into_gpt(gpt, params):
    """Copy GPT-2 weights (the dict of `load_gpt2_params_from_tf_ckpt` or
    `load_hf_gpt2_safetensors`) into our GPTModel, checking every shape.

    OpenAI stores linear weights as (in, out), nn.Linear as (out, in): they are transposed. The
    query, key and value projections are one matrix `c_attn` there, split in three here. GPT-2
    ties the output head to the token embedding, so `out_head` gets a copy of `wte` (unless
    the dict holds a separate "out_head").
    """
    _assign(gpt.tok_emb.weight, _lookup(params, "wte"), "wte")
    _assign(gpt.pos_emb.weight, _lookup(params, "wpe"), "wpe")
    if len(params["blocks"]) != len(gpt.trf_blocks):
        raise ValueError(f"the checkpoint has {len(params['blocks'])} transformer blocks, the model "
                         f"{len(gpt.trf_blocks)}: build the model with the checkpoint's n_layers")
    for i, block in enumerate(gpt.trf_blocks):
        p = f"blocks/{i}/"
        att = block.att
        q_w, k_w, v_w = torch.chunk(_lookup(params, p + "attn/c_attn/w"), 3, dim=-1)
        q_b, k_b, v_b = torch.chunk(_lookup(params, p + "attn/c_attn/b"), 3, dim=-1)
        for name, linear, w, b in [("query", att.W_query, q_w, q_b), ("key", att.W_key, k_w, k_b),
                                   ("value", att.W_value, v_w, v_b)]:
            _assign(linear.weight, w.T, f"{p}attn/c_attn/w ({name})")
            if linear.bias is not None:
                _assign(linear.bias, b, f"{p}attn/c_attn/b ({name})")
            elif b.abs().max() > 0:
                raise ValueError("the checkpoint has query/key/value biases, but the model was built with "
                                 "qkv_bias=False; build it with qkv_bias=True (as OpenAI's GPT-2 uses)")
        for linear, name in [(att.out_proj, "attn/c_proj"), (block.ff.layers[0], "mlp/c_fc"),
                             (block.ff.layers[2], "mlp/c_proj")]:
            _assign(linear.weight, _lookup(params, p + name + "/w").T, p + name + "/w")
            _assign(linear.bias, _lookup(params, p + name + "/b"), p + name + "/b")
        for norm, name in [(block.norm1, "ln_1"), (block.norm2, "ln_2")]:
            _assign(norm.scale, _lookup(params, p + name + "/g"), p + name + "/g")
            _assign(norm.shift, _lookup(params, p + name + "/b"), p + name + "/b")
    _assign(gpt.final_norm.scale, _lookup(params, "g"), "g (final LayerNorm)")
    _assign(gpt.final_norm.shift, _lookup(params, "b"), "b (final LayerNorm)")
    if "out_head" in params:  # an untied head, as save_gpt_as_hf writes for models trained untied
        _assign(gpt.out_head.weight, _lookup(params, "out_head"), "out_head")
    else:
        _assign(gpt.out_head.weight, _lookup(params, "wte"), "wte (tied output head)")


# ---- ch05_pretraining.ipynb, cell 65 ----
def load_hf_gpt2_safetensors(path):
    """Read GPT-2 weights in Hugging Face's layout (`model.safetensors` of openai-community/gpt2,
    gpt2-medium, gpt2-large, gpt2-xl, or of `save_pretrained`) into the same dict as
    `load_gpt2_params_from_tf_ckpt`, so `load_weights_into_gpt` serves both. No TensorFlow needed;
    safetensors holds raw tensors only, so nothing is unpickled."""
    from safetensors.torch import load_file

    tensors = {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}
    n_layers = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("h."))
    params = {"wte": tensors["wte.weight"], "wpe": tensors["wpe.weight"],
              "g": tensors["ln_f.weight"], "b": tensors["ln_f.bias"], "blocks": []}
    for i in range(n_layers):
        t = lambda name: tensors[f"h.{i}.{name}"]  # noqa: E731
        params["blocks"].append({
            # Hugging Face's Conv1D keeps OpenAI's (in, out) layout, so no transposes here.
            "attn": {"c_attn": {"w": t("attn.c_attn.weight"), "b": t("attn.c_attn.bias")},
                     "c_proj": {"w": t("attn.c_proj.weight"), "b": t("attn.c_proj.bias")}},
            "mlp": {"c_fc": {"w": t("mlp.c_fc.weight"), "b": t("mlp.c_fc.bias")},
                    "c_proj": {"w": t("mlp.c_proj.weight"), "b": t("mlp.c_proj.bias")}},
            "ln_1": {"g": t("ln_1.weight"), "b": t("ln_1.bias")},
            "ln_2": {"g": t("ln_2.weight"), "b": t("ln_2.bias")},
        })
    if "lm_head.weight" in tensors and not torch.equal(tensors["lm_head.weight"], tensors["wte.weight"]):
        params["out_head"] = tensors["lm_head.weight"]
    return params


def gpt_to_params(gpt):
    """The inverse of `load_weights_into_gpt`: our model's weights as a GPT-2 params dict of
    float32 CPU tensors in OpenAI's (in, out) layout (zero query/key/value biases if it has none)."""
    cpu = lambda t: t.detach().float().cpu()  # noqa: E731
    d = gpt.tok_emb.weight.shape[1]
    params = {"wte": cpu(gpt.tok_emb.weight), "wpe": cpu(gpt.pos_emb.weight),
              "g": cpu(gpt.final_norm.scale), "b": cpu(gpt.final_norm.shift), "blocks": []}
    for block in gpt.trf_blocks:
        att = block.att
        qkv = [att.W_query, att.W_key, att.W_value]
        bias = [cpu(l.bias) if l.bias is not None else torch.zeros(d) for l in qkv]
        params["blocks"].append({
            "attn": {"c_attn": {"w": torch.cat([cpu(l.weight).T for l in qkv], dim=1), "b": torch.cat(bias)},
                     "c_proj": {"w": cpu(att.out_proj.weight).T, "b": cpu(att.out_proj.bias)}},
            "mlp": {"c_fc": {"w": cpu(block.ff.layers[0].weight).T, "b": cpu(block.ff.layers[0].bias)},
                    "c_proj": {"w": cpu(block.ff.layers[2].weight).T, "b": cpu(block.ff.layers[2].bias)}},
            "ln_1": {"g": cpu(block.norm1.scale), "b": cpu(block.norm1.shift)},
            "ln_2": {"g": cpu(block.norm2.scale), "b": cpu(block.norm2.shift)},
        })
    if not torch.equal(gpt.out_head.weight, gpt.tok_emb.weight):
        params["out_head"] = cpu(gpt.out_head.weight)
    return params


def save_gpt_as_hf(gpt, out_dir):
    """Write our model as a Hugging Face GPT-2 folder (model.safetensors + config.json) that
    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` loads. A model built with
    qkv_bias=False gets zero query/key/value biases (the same function); an output head that
    differs from the token embedding is saved as lm_head with tie_word_embeddings false."""
    from safetensors.torch import save_file

    params = gpt_to_params(gpt)
    tensors = {"transformer.wte.weight": params["wte"], "transformer.wpe.weight": params["wpe"],
               "transformer.ln_f.weight": params["g"], "transformer.ln_f.bias": params["b"]}
    for i, block in enumerate(params["blocks"]):
        for group, layers in [("attn", ("c_attn", "c_proj")), ("mlp", ("c_fc", "c_proj"))]:
            for layer in layers:
                tensors[f"transformer.h.{i}.{group}.{layer}.weight"] = block[group][layer]["w"]
                tensors[f"transformer.h.{i}.{group}.{layer}.bias"] = block[group][layer]["b"]
        for ln in ("ln_1", "ln_2"):
            tensors[f"transformer.h.{i}.{ln}.weight"] = block[ln]["g"]
            tensors[f"transformer.h.{i}.{ln}.bias"] = block[ln]["b"]
    tied = "out_head" not in params
    if not tied:
        tensors["lm_head.weight"] = params["out_head"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = gpt.cfg
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg["vocab_size"],
              "n_positions": cfg["context_length"], "n_embd": cfg["emb_dim"], "n_layer": cfg["n_layers"],
              "n_head": cfg["n_heads"], "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "resid_pdrop": cfg["drop_rate"], "embd_pdrop": cfg["drop_rate"], "attn_pdrop": cfg["drop_rate"],
              "tie_word_embeddings": tied, "bos_token_id": 50256, "eos_token_id": 50256}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out_dir


# ---- ch05_pretraining.ipynb, cell 67 ----
def save_gpt_as_tf_checkpoint(gpt, out_dir, data_dir=None):
    """Write our model in the exact file set of OpenAI's GPT-2 release (hparams.json, checkpoint,
    model.ckpt.index/.data-00000-of-00001/.meta, encoder.json, vocab.bpe), with OpenAI's variable
    names and shapes, so `load_gpt2_params_from_tf_ckpt` reads it like the original (an output
    head that differs from the token embedding is kept as an extra variable, model/out_head). Needs
    TensorFlow. Variables are filled through a placeholder rather than baked into the graph,
    which keeps the .meta file small for large models."""
    tf = _import_tensorflow()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = gpt_to_params(gpt)
    arrays = {"model/wte": params["wte"], "model/wpe": params["wpe"],
              "model/ln_f/g": params["g"], "model/ln_f/b": params["b"]}
    for i, block in enumerate(params["blocks"]):
        for group, layers in [("attn", ("c_attn", "c_proj")), ("mlp", ("c_fc", "c_proj"))]:
            for layer in layers:
                arrays[f"model/h{i}/{group}/{layer}/w"] = block[group][layer]["w"].unsqueeze(0)  # (1, in, out)
                arrays[f"model/h{i}/{group}/{layer}/b"] = block[group][layer]["b"]
        for ln in ("ln_1", "ln_2"):
            arrays[f"model/h{i}/{ln}/g"] = block[ln]["g"]
            arrays[f"model/h{i}/{ln}/b"] = block[ln]["b"]
    if "out_head" in params:  # trained untied: an extra variable, which OpenAI's own files never have
        arrays["model/out_head"] = params["out_head"]
    graph = tf.Graph()
    with graph.as_default():
        value = tf.compat.v1.placeholder(tf.float32)
        variables = {name: tf.compat.v1.Variable(tf.zeros(a.shape), name=name) for name, a in arrays.items()}
        assigns = {name: v.assign(value) for name, v in variables.items()}
        saver = tf.compat.v1.train.Saver(variables, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            for name, a in arrays.items():
                sess.run(assigns[name], {value: a.numpy()})
            saver.save(sess, str(out_dir / "model.ckpt"))
    cfg = gpt.cfg
    hparams = {"n_vocab": cfg["vocab_size"], "n_ctx": cfg["context_length"], "n_embd": cfg["emb_dim"],
               "n_head": cfg["n_heads"], "n_layer": cfg["n_layers"]}
    (out_dir / "hparams.json").write_text(json.dumps(hparams, indent=2), encoding="utf-8")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(fetch(f"gpt2/{name}", data_dir), out_dir / name)
    return out_dir
