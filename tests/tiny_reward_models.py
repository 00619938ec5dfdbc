"""Tiny randomly initialised reward models of real architectures, built offline for the reward-model tests.

No reward model can be downloaded in CI, so the tests build, once per session, a 2-layer model of the
architecture vLLM loads (`Qwen2ForProcessRewardModel`, `Qwen2ForSequenceClassification`, `LlamaForCausalLM`)
with weights named as vLLM's implementation expects, and a byte-level tokenizer made with the `tokenizers`
library: every byte is a token, plus the chat, step-tag and label tokens as added tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HIDDEN = 128
LAYERS = 2
HEADS = 2
KV_HEADS = 1
INTERMEDIATE = 256

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
ADDED = ["ки"]  # math-shepherd's step tag, one token as in the real vocabulary


def build_tokenizer(folder: Path, *, with_step_tag: bool = True) -> int:
    """A byte-level tokenizer (256 byte tokens + specials) saved in `folder`; returns the vocabulary size."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIAL if with_step_tag else [s for s in SPECIAL if s != "<extra_0>"]
    tok.add_special_tokens(specials)
    tok.add_tokens(ADDED)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHATML,
        "model_max_length": 2048,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    size = tok.get_vocab_size()
    return size + (-size) % 8  # a padded embedding table, as real models have


def _config(architecture: str, model_type: str, vocab: int, **extra: object) -> dict:
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 256,
        "eos_token_id": 258,
        **extra,
    }


def _backbone(vocab: int, gen: torch.Generator, bias: bool) -> dict[str, torch.Tensor]:
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.2

    head_dim = HIDDEN // HEADS
    w = {"model.embed_tokens.weight": rand(vocab, HIDDEN), "model.norm.weight": torch.ones(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(HIDDEN)
        w[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = rand(HEADS * head_dim, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HEADS * head_dim)
        if bias:  # Qwen2 has q/k/v biases
            w[p + "self_attn.q_proj.bias"] = rand(HEADS * head_dim)
            w[p + "self_attn.k_proj.bias"] = rand(KV_HEADS * head_dim)
            w[p + "self_attn.v_proj.bias"] = rand(KV_HEADS * head_dim)
        w[p + "mlp.gate_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        w[p + "mlp.up_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        w[p + "mlp.down_proj.weight"] = rand(HIDDEN, INTERMEDIATE)
    return w


def build_qwen2_prm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer `Qwen2ForProcessRewardModel` (Qwen2.5-Math-PRM's architecture): backbone + score MLP, 2 labels."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(folder)
    gen = torch.Generator().manual_seed(seed)
    w = _backbone(vocab, gen, bias=True)
    w["score.0.weight"] = torch.randn(HIDDEN, HIDDEN, generator=gen) * 0.3
    w["score.0.bias"] = torch.zeros(HIDDEN)
    w["score.2.weight"] = torch.randn(2, HIDDEN, generator=gen) * 0.3
    w["score.2.bias"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in w.items()}, str(folder / "model.safetensors"))
    cfg = _config("Qwen2ForProcessRewardModel", "qwen2", vocab, num_labels=2)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def build_qwen2_orm(folder: Path, seed: int = 1) -> Path:
    """A 2-layer `Qwen2ForSequenceClassification` with one label: an outcome reward model (last-token pooling)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(folder)
    gen = torch.Generator().manual_seed(seed)
    w = _backbone(vocab, gen, bias=True)
    w["score.weight"] = torch.randn(1, HIDDEN, generator=gen) * 0.3
    save_file({k: v.contiguous() for k, v in w.items()}, str(folder / "model.safetensors"))
    cfg = _config("Qwen2ForSequenceClassification", "qwen2", vocab, num_labels=1,
                  id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def build_llama_lm(folder: Path, seed: int = 2) -> Path:
    """A 2-layer `LlamaForCausalLM` (the architecture of RLHFlow's and Math-Shepherd's PRMs: a causal LM)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(folder)
    gen = torch.Generator().manual_seed(seed)
    w = _backbone(vocab, gen, bias=False)
    w["lm_head.weight"] = torch.randn(vocab, HIDDEN, generator=gen) * 0.3
    save_file({k: v.contiguous() for k, v in w.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(_config("LlamaForCausalLM", "llama", vocab)))
    return folder
