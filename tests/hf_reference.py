"""Hugging Face transformers' GPT-2 as an independent reference implementation for the tests.

The model is built from a local config with random weights (nothing is downloaded). The copy
into our GPTModel is written here, independently of helpers.weights, so that a test comparing
logits checks both our model and (elsewhere) our loaders.
"""
import torch

from helpers.model import GPTModel


def hf_config(cfg):
    from transformers import GPT2Config
    return GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
                      n_layer=cfg["n_layers"], n_head=cfg["n_heads"], activation_function="gelu_new",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)


def random_hf_gpt2(cfg, seed=0):
    """A randomly initialised GPT2LMHeadModel of cfg's shape, in eval mode, with non-trivial
    LayerNorm and bias values (the default init leaves them at 1 and 0, which would hide mix-ups)."""
    from transformers import GPT2LMHeadModel
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hf_config(cfg)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
            if not cfg["qkv_bias"] and name.endswith("attn.c_attn.bias"):
                p.zero_()  # our qkv_bias=False layers have no bias: make HF's a no-op
    return hf


def copy_hf_into_gpt(hf, cfg):
    """Our GPTModel holding hf's weights. HF's Conv1D stores weights as (in, out): transpose."""
    model = GPTModel({**cfg, "drop_rate": 0.0}).eval()
    sd = hf.transformer.state_dict()
    d = cfg["emb_dim"]
    with torch.no_grad():
        model.tok_emb.weight.copy_(sd["wte.weight"])
        model.pos_emb.weight.copy_(sd["wpe.weight"])
        model.out_head.weight.copy_(hf.lm_head.weight)
        for i, block in enumerate(model.trf_blocks):
            p = f"h.{i}."
            w, b = sd[p + "attn.c_attn.weight"].T, sd[p + "attn.c_attn.bias"]
            for k, lin in enumerate([block.att.W_query, block.att.W_key, block.att.W_value]):
                lin.weight.copy_(w[k * d:(k + 1) * d])
                if lin.bias is not None:
                    lin.bias.copy_(b[k * d:(k + 1) * d])
            block.att.out_proj.weight.copy_(sd[p + "attn.c_proj.weight"].T)
            block.att.out_proj.bias.copy_(sd[p + "attn.c_proj.bias"])
            block.ff.layers[0].weight.copy_(sd[p + "mlp.c_fc.weight"].T)
            block.ff.layers[0].bias.copy_(sd[p + "mlp.c_fc.bias"])
            block.ff.layers[2].weight.copy_(sd[p + "mlp.c_proj.weight"].T)
            block.ff.layers[2].bias.copy_(sd[p + "mlp.c_proj.bias"])
            block.norm1.scale.copy_(sd[p + "ln_1.weight"])
            block.norm1.shift.copy_(sd[p + "ln_1.bias"])
            block.norm2.scale.copy_(sd[p + "ln_2.weight"])
            block.norm2.shift.copy_(sd[p + "ln_2.bias"])
        model.final_norm.scale.copy_(sd["ln_f.weight"])
        model.final_norm.shift.copy_(sd["ln_f.bias"])
    return model
