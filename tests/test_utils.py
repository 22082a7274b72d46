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
    assert utils.digest(x) == utils.digest(torch.from_numpy(x))
    assert utils.digest(x) != utils.digest(x.reshape(2, 3)), "the shape is part of the data"
    assert utils.digest(x) != utils.digest(x.astype(np.int32).view(np.float32)), "so is the dtype's name"
    assert utils.digest(np.zeros(2, np.int64)) != utils.digest(np.zeros(2, np.float64))
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


def test_config_text_hashes_arrays_by_content_never_by_str():
    """str() of a large tensor elides its middle: two tensors that differ there must still give two keys."""
    import torch
    from lib import utils
    a, b = torch.zeros(5000), torch.zeros(5000)
    b[2500] = 1.0
    assert str(a) == str(b), "the case this guards against"
    assert utils.config_text({"x": a}) != utils.config_text({"x": b})
    assert utils.config_text({"x": a}) == utils.config_text({"x": torch.zeros(5000)})
    with pytest.raises(TypeError, match="cannot hold a object"):
        utils.config_text({"x": object()})


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    import os
    import subprocess
    from lib import utils
    dead = subprocess.run(["true"]).args and subprocess.Popen(["true"])
    dead.wait()                                            # a pid that has ended
    stale = tmp_path / f".fit_x.pt.{dead.pid}.abc123.tmp"
    stale.write_bytes(b"half")
    stale_dir = tmp_path / f".llm.{dead.pid}.d3f.tmp"
    stale_dir.mkdir()
    live = tmp_path / f".fit_y.pt.{os.getpid()}.abc123.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / "fit_z.pt"
    other.write_bytes(b"ok")
    removed = utils.remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale.name, stale_dir.name])
    assert live.exists() and other.exists() and not stale.exists() and not stale_dir.exists()


def test_a_folder_written_by_another_process_first_is_loaded_not_clobbered(tmp_path):
    """Two first loads of the LLM race on the cache folder: the second to finish loads the first one's folder."""
    from lib import utils
    target = tmp_path / "llm_folder"

    def save(value, folder):
        (folder / "v.txt").write_text(value)

    def compute():                                          # meanwhile another process finishes the same folder
        target.mkdir()
        (target / "v.txt").write_text("winner")
        return "loser"

    value, hit = utils.cached(target, compute, load=lambda p: (p / "v.txt").read_text(), save=save, directory=True)
    assert value == "winner" and hit is False
    assert (target / "v.txt").read_text() == "winner"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "the loser's temporary is removed"
    assert utils.CACHE_LOG[-1]["status"].startswith("computed (another process")


def test_cache_log_records_hits_and_computations(tmp_path):
    from lib import utils
    path = tmp_path / "x.pt"
    n = len(utils.CACHE_LOG)
    utils.cached(path, lambda: 1)
    utils.cached(path, lambda: 2)
    utils.cached(path, lambda: 3, use=False)
    assert [e["status"] for e in utils.CACHE_LOG[n:]] == ["computed", "hit", "not used"]
    assert utils.CACHE_LOG[n]["path"] == str(path)


def test_lib_closure_follows_imports():
    from lib import utils
    c = utils.lib_closure("lib.train")
    assert {"lib.train", "lib.data", "lib.metrics", "lib.utils", "lib.models.sasrec"} <= set(c)
    assert "lib.site" not in c and "lib.llm" not in c


def test_text_digest_separates_texts_and_lists():
    from lib import utils
    assert utils.text_digest("ab", "c") != utils.text_digest("a", "bc")
    assert utils.text_digest(["Drama", "War"]) != utils.text_digest(["Drama War"])
    assert utils.text_digest("Toy Story", ["Animation"]) == utils.text_digest("Toy Story", ["Animation"])
