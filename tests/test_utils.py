"""lib.utils: the one cache helper (hit, miss, corrupt file, folders, no temporary left), cache keys, eval_mode."""
import warnings

import numpy as np
import pytest
import torch

from lib import utils


def counted(value):
    calls = []

    def compute():
        calls.append(1)
        return value
    return compute, calls


def test_cached_computes_once_then_loads(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    compute, calls = counted(torch.arange(3.0))
    a, hit_a = utils.cached(path, compute)
    b, hit_b = utils.cached(path, compute)
    assert (hit_a, hit_b) == (False, True) and len(calls) == 1 and torch.equal(a, b)
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"], "written atomically: no temporary left"


def test_cached_recomputes_a_corrupt_file_with_a_warning(tmp_path):
    path = tmp_path / "x.pt"
    compute, calls = counted({"w": torch.ones(2)})
    utils.cached(path, compute)
    path.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match=r"x.pt is unreadable \(.*\); recomputing it"):
        value, hit = utils.cached(path, compute)
    assert hit is False and len(calls) == 2 and torch.equal(value["w"], torch.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # rewritten: a clean hit now
        assert utils.cached(path, compute)[1] is True


def test_cached_load_checks_refuse_a_file_and_use_false_writes_nothing(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(5), path)                         # e.g. another format than this reader expects

    def load(p):
        t = torch.load(p, weights_only=True)
        if t.shape != (3,):
            raise ValueError(f"shape {tuple(t.shape)}")
        return t
    compute, calls = counted(torch.ones(3))
    with pytest.warns(UserWarning, match=r"ValueError: shape \(5,\)"):
        assert torch.equal(utils.cached(path, compute, load=load)[0], torch.ones(3))
    assert torch.load(path, weights_only=True).shape == (3,)
    other = tmp_path / "off.pt"
    assert utils.cached(other, compute, use=False) == (compute(), False) and not other.exists()


def test_cached_folders_and_a_failing_compute(tmp_path):
    folder = tmp_path / "model"

    def save(value, tmp):
        (tmp / "weights.txt").write_text(value)
    load = lambda p: (p / "weights.txt").read_text()
    assert utils.cached(folder, lambda: "v1", load=load, save=save, directory=True) == ("v1", False)
    assert utils.cached(folder, lambda: "v2", load=load, save=save, directory=True) == ("v1", True)
    (folder / "weights.txt").unlink()                        # an incomplete folder is rebuilt
    with pytest.warns(UserWarning, match="unreadable"):
        assert utils.cached(folder, lambda: "v3", load=load, save=save, directory=True) == ("v3", False)

    def broken():
        raise RuntimeError("no")
    with pytest.raises(RuntimeError):
        utils.cached(tmp_path / "y.pt", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_cache_file_is_keyed_by_the_whole_config(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "CACHE", tmp_path)
    a = utils.cache_file("fit", {"seed": 0, "key": {"model": "SASRec", "hidden": 64}})
    assert a == utils.cache_file("fit", {"key": {"hidden": 64, "model": "SASRec"}, "seed": 0})    # order is not a key
    assert a != utils.cache_file("fit", {"seed": 0, "key": {"model": "SASRec", "hidden": 32}})
    assert a.parent == tmp_path and a.name.startswith("fit_") and len(a.stem) == len("fit_") + 16
    assert utils.cache_file("deftrec/llm_pass", {}).parent == tmp_path / "deftrec"


def test_digest_of_arrays_and_tensors():
    x = np.arange(6, dtype=np.float32)
    assert utils.digest(x) == utils.digest(torch.from_numpy(x)) == utils.digest(x.reshape(2, 3))
    assert utils.digest(x[:3], x[3:]) != utils.digest(x), "parts are separated"
    assert utils.digest(x) != utils.digest(x + 1)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Dropout(0.5), torch.nn.Linear(2, 2)


def test_eval_mode_switches_off_and_restores_even_on_error():
    m = Net().train()
    with utils.eval_mode(m) as inside:
        assert inside is m and not any(x.training for x in m.modules())
    assert all(x.training for x in m.modules())
    with pytest.raises(KeyError):
        with utils.eval_mode(m):
            raise KeyError("boom")
    assert all(x.training for x in m.modules()), "restored after the exception"
    m.eval()
    with utils.eval_mode(m):
        pass
    assert not any(x.training for x in m.modules())
    m.train()
    m.a.eval()                                               # a submodule with a mode of its own keeps it
    with utils.eval_mode(m):
        pass
    assert m.training and m.b.training and not m.a.training
