"""The one training loop and its fits: exact repeat under a seed, early stopping, best weights restored, a loss that is
not finite refused with its epoch and batch, the suite's defaults, the fit cache."""
import numpy as np
import pytest
import torch

from lib import train
from lib.data import Split
from lib.models.sasrec import SASRec


def toy_split(n_users=40, n_items=15, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [(rng.integers(0, n_items - 1) + np.arange(12)) % (n_items - 1) + 1
            for _ in range(n_users)]                       # cyclic runs i, i+1, ...: a learnable next-item rule
    return Split(train=[s[:-2] for s in seqs], valid=np.array([s[-2] for s in seqs]),
                 test=np.array([s[-1] for s in seqs]), n_items=n_items)


def model(sp, **kw):
    return SASRec(sp.n_items, hidden=16, n_layers=1, n_heads=1, inner=32, max_len=8, **kw)


def test_seed_repeats_exactly():
    sp = toy_split()
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # different global state before: fit must seed everything itself
        m = model(sp)
        r = train.fit(m, sp, max_len=8, epochs=3, batch_size=8, lr=1e-2, seed=7, progress=False)
        runs.append(([h["loss"] for h in r.history], m.item_emb.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_learns_and_keeps_best_epoch():
    sp = toy_split()
    m = model(sp, dropout=0.1, attn_dropout=0.1)
    r = train.fit(m, sp, max_len=8, epochs=30, batch_size=8, lr=1e-2, patience=3, seed=0, progress=False)
    best = max(h["valid_NDCG@10"] for h in r.history)
    assert r.best_valid["NDCG@10"] == best and r.history[r.best_epoch - 1]["valid_NDCG@10"] == best
    assert best > 0.5                                     # a deterministic rule is learnable
    assert len(r.history) <= r.best_epoch + 3             # early stopping honoured
    again = train.evaluate_model(m, sp, 8, "valid", groups=False)["overall"]["NDCG@10"]
    assert again == pytest.approx(best)                   # the best weights were restored


def test_nan_loss_names_epoch_and_step():
    sp = toy_split()
    m = model(sp)
    with torch.no_grad():
        m.item_emb.weight[3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, batch 0: training diverged"):
        train.fit(m, sp, max_len=8, epochs=1, batch_size=64, seed=0, progress=False)


def test_fit_defaults_are_the_suites_sasrec_schedule():
    import inspect
    from lib.models.sasrec import TRAIN_DEFAULTS
    sig = inspect.signature(train.fit).parameters
    assert {k: sig[k].default for k in TRAIN_DEFAULTS} == TRAIN_DEFAULTS
    assert TRAIN_DEFAULTS["lr"] == 4e-3 and TRAIN_DEFAULTS["decay_epochs"] == 30


# --------------------------------------------------------------------------- the loop itself
class Counter(torch.nn.Module):
    """One weight w; each step adds 1 to it (SGD, lr 1, on the loss -w), so w counts the batches trained on."""
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


def counting(model, scores, **kw):
    """loop() on Counter with two batches per epoch and validation NDCG@10 = scores[epoch - 1]."""
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []

    def validate():
        seen.append(int(model.w.item()))
        assert not model.training, "validation runs in eval mode"
        return {"NDCG@10": scores[len(seen) - 1], "HR@10": 1.0}
    kw.setdefault("validate", validate)
    res = train.loop(model, lambda epoch: [1, 2], lambda b: {"loss": train.update(opt, -model.w), "b": float(b)},
                     progress=False, **kw)
    return res, seen


def test_loop_restores_the_best_weights_and_stops_after_patience():
    m = Counter()
    res, seen = counting(m, [0.1, 0.5, 0.3, 0.2, 0.9], epochs=5, patience=2)
    assert seen == [2, 4, 6, 8]                        # epoch 5 never ran: two validations without a better one
    assert res.best_epoch == 2 and res.best_valid == {"NDCG@10": 0.5, "HR@10": 1.0}
    assert m.w.item() == 4.0, "the weights of epoch 2 are back"
    assert not m.training
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.history[0]["loss"] == pytest.approx(-0.5) and res.history[0]["b"] == 1.5       # means over batches
    assert res.history[1]["valid_NDCG@10"] == 0.5 and res.history[1]["valid_HR@10"] == 1.0
    assert 0 <= res.seconds_to_best <= res.seconds
    assert res.summary()["best_epoch"] == 2 and res.summary()["epochs_run"] == 4


def test_loop_validates_every_eval_every_epochs_and_at_the_last():
    m = Counter()
    res, seen = counting(m, [0.2, 0.1, 0.3], epochs=7, eval_every=3, patience=5)
    assert [r["epoch"] for r in res.history if "valid_NDCG@10" in r] == [3, 6, 7]
    assert res.best_epoch == 7 and m.w.item() == 14.0


def test_loop_stop_and_max_batches_and_no_validation():
    m = Counter()
    res, _ = counting(m, [], epochs=10, validate=None, max_batches=1, stop=lambda: m.w.item() >= 3)
    assert len(res.history) == 3 and m.w.item() == 3.0      # one batch per epoch; stop() after the third epoch
    assert res.best_epoch == 0 and res.best_valid == {}      # nothing validated: the last weights stay
    m = Counter()
    rows = counting(m, [], epochs=2, validate=None, unit="step")[0].history
    assert [r["step"] for r in rows] == [1, 2] and {"train_seconds", "seconds"} <= set(rows[0])


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_loop_refuses_a_non_finite_loss_naming_epoch_and_batch(unit):
    m = Counter()
    opt = torch.optim.SGD(m.parameters(), lr=1.0)

    def step(b):
        loss = -m.w if (b, m.w.item()) != (2, 3.0) else m.w * float("inf")     # epoch 2, batch 1 (its 2nd): inf
        return {"loss": train.update(opt, loss)}
    with pytest.raises(FloatingPointError, match=rf"loss is inf at {unit} 2, batch 1: training diverged"):
        train.loop(m, lambda epoch: [1, 2], step, epochs=3, unit=unit, progress=False)
    assert m.w.item() == 3.0, "the refused loss changed no weight"


def test_update_refuses_before_any_change():
    m = Counter()
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    assert train.update(opt, -m.w) == 0.0 and m.w.item() == 1.0
    with pytest.raises(train.NonFiniteLoss, match="loss is nan"):
        train.update(opt, m.w * float("nan"))
    assert m.w.item() == 1.0 and m.w.grad.item() == -1.0           # the last finite step's gradient, untouched


def test_precomputed_scorer_reads_the_stage_rows():
    S = {"valid": torch.arange(12.).view(3, 4), "test": -torch.arange(12.).view(3, 4)}
    f = train.precomputed_scorer(S)
    assert torch.equal(f(torch.tensor([2, 0]), "test"), S["test"][[2, 0]])
    assert torch.equal(f(torch.tensor([1]), "valid"), S["valid"][[1]])


def test_max_history_trains_on_the_last_transitions_only():
    import numpy as np
    from lib.data import Split
    sp = Split(train=[np.arange(1, 11), np.array([3, 4])], valid=np.array([1, 2]), test=np.array([2, 3]), n_items=12)
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def calculate_loss(self, batch):
            seen.append(batch["target_seq"].clone())
            return (self.w ** 2).sum() + 1.0

        def full_sort_predict(self, batch):
            return torch.zeros(len(batch["item_seq"]), 12) + self.w

    train.fit(Probe(), sp, max_len=3, epochs=1, batch_size=8, seed=0, progress=False, max_history=3)
    targets = sorted(int(t) for b in seen for t in b.flatten() if t != 0)
    assert targets == sorted([8, 9, 10, 4])            # user 0: last 3 transitions; user 1 has only one


def test_fit_cached_trains_once_then_loads_the_same_model(tmp_path, monkeypatch):
    from lib import utils
    monkeypatch.setattr(utils, "CACHE", tmp_path)
    sp = toy_split()
    kw = dict(max_len=8, epochs=2, batch_size=8, lr=1e-2, progress=False)
    key = {"model": "toy"}
    m1, r1, c1 = train.fit_cached(lambda: model(sp), sp, seed=3, key=key, **kw)
    torch.manual_seed(99)                                  # a different global state must not matter
    m2, r2, c2 = train.fit_cached(lambda: model(sp), sp, seed=3, key=key, **kw)
    assert (c1, c2) == (False, True)
    assert train.fit_cached(lambda: model(sp), sp, seed=3, key=key, fit_fn=train.fit, **kw)[2] is True   # same key
    assert r2.history == r1.history and r2.best_epoch == r1.best_epoch and r2.best_valid == r1.best_valid
    assert r2.summary() == {"best_epoch": r1.best_epoch, "epochs_run": 2, "seconds": r1.seconds,
                            "valid_NDCG@10": r1.best_valid["NDCG@10"]}           # 2 epochs, no early stop
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    # a fresh fit under the same seed starts from the same weights as the cached one did
    from lib.utils import set_seed
    set_seed(3)
    ref = model(sp)
    train.fit(ref, sp, seed=3, **kw)
    assert torch.equal(ref.item_emb.weight, m2.item_emb.weight)
    assert len(list(tmp_path.glob("fit_*.pt"))) == 1
    # another seed, another key or other data: another entry, trained
    assert train.fit_cached(lambda: model(sp), sp, seed=4, key=key, **kw)[2] is False
    assert train.fit_cached(lambda: model(sp), sp, seed=3, key={"model": "toy2"}, **kw)[2] is False
    sp2 = toy_split(seed=1)
    assert train.fit_cached(lambda: model(sp2), sp2, seed=3, key=key, **kw)[2] is False
    assert len(list(tmp_path.glob("fit_*.pt"))) == 4


def test_fit_cached_retrains_over_a_corrupt_file(tmp_path, monkeypatch):
    from lib import utils
    monkeypatch.setattr(utils, "CACHE", tmp_path)
    sp = toy_split()
    kw = dict(max_len=8, epochs=1, batch_size=8, lr=1e-2, progress=False)
    m1, _, _ = train.fit_cached(lambda: model(sp), sp, seed=0, key={}, **kw)
    (path,) = tmp_path.glob("fit_*.pt")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        m2, _, cached = train.fit_cached(lambda: model(sp), sp, seed=0, key={}, **kw)
    assert cached is False
    assert torch.equal(m1.item_emb.weight, m2.item_emb.weight)
    assert train.fit_cached(lambda: model(sp), sp, seed=0, key={}, **kw)[2] is True     # rewritten, readable
    assert not list(tmp_path.glob(".*tmp"))                                             # no temporary left over


def test_fit_cached_misses_when_code_on_its_path_changes(tmp_path, monkeypatch):
    """An edit of a function body that the fit runs (train.lr_factor, a pulled fix) retrains; the same code, or an edit
    of a module the fit does not import (lib/site.py), loads the cache. `device` is not part of the key."""
    import shutil
    from lib import utils
    lib_copy = tmp_path / "lib"
    shutil.copytree(utils._LIB, lib_copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(utils, "_LIB", lib_copy)          # fingerprints read this copy of lib/
    monkeypatch.setattr(utils, "CACHE", tmp_path / "cache")
    sp = toy_split()
    kw = dict(max_len=8, epochs=1, batch_size=8, lr=1e-2, progress=False)
    fit = lambda **more: train.fit_cached(lambda: model(sp), sp, seed=2, key={"model": "toy"}, **kw, **more)[2]
    assert fit(device="cpu") is False and fit() is True, "same code, same key (device left out)"
    site = lib_copy / "site.py"
    site.write_text(site.read_text() + "\n# an edit elsewhere\n")
    assert fit() is True, "a module the fit does not import is not in its key"
    src = (lib_copy / "train.py").read_text()
    body = "    if step < warmup_steps:\n"
    assert body in src
    (lib_copy / "train.py").write_text(src.replace(body, "    step = int(step)\n" + body, 1))
    assert fit() is False, "an edited function body on the fit's path misses the cache"
    assert fit() is True


def test_fit_cached_keys_a_partial_fit_function_by_its_function_and_arguments(tmp_path, monkeypatch):
    """Notebook 05 hands fit_cached `partial(train.fit, on_epoch=...)`: the bound arguments are part of the key."""
    import functools
    from lib import utils
    monkeypatch.setattr(utils, "CACHE", tmp_path)
    sp = toy_split()
    kw = dict(max_len=8, epochs=1, batch_size=8, lr=1e-2, progress=False)
    log_a = lambda epoch, m: {"a": 1.0}
    log_b = lambda epoch, m: {"b": 2.0}
    fit = lambda fn: train.fit_cached(lambda: model(sp), sp, seed=1, key={"model": "toy"}, fit_fn=fn, **kw)[2]
    assert fit(functools.partial(train.fit, on_epoch=log_a)) is False
    assert fit(functools.partial(train.fit, on_epoch=log_a)) is True
    assert fit(functools.partial(train.fit, on_epoch=log_b)) is False, "another bound function: another fit"


def _record_fit_cached(monkeypatch):
    """(seen, ds): train.fit_cached replaced by a recorder of its arguments and the model it builds; a toy dataset."""
    seen = {}

    def fake(build, split, **kw):
        seen.update(kw, model=build())
        return "m", "f", False
    monkeypatch.setattr(train, "fit_cached", fake)
    return seen, type("DS", (), {"n_items": 30, "name": "toy"})()


def test_the_reference_sasrec_is_evidence_01s_fit(monkeypatch):
    """fit_sasrec_reference asks fit_cached for exactly what evidence 01 asks at its defaults (so one cached fit per
    split and seed serves both): the same model settings, key and fit arguments."""
    from lib import params
    from lib.models.sasrec import DEFAULTS, TRAIN_DEFAULTS
    d01 = params.defaults("evidence/01_sasrec_baseline")
    cfg01 = dict(DEFAULTS, hidden=d01["hidden"], n_layers=d01["n_layers"], n_heads=d01["n_heads"],
                 max_len=d01["max_len"], dropout=d01["dropout"], attn_dropout=d01["dropout"])
    fit01 = {k: d01[k] for k in TRAIN_DEFAULTS}
    assert cfg01 == DEFAULTS and fit01 == TRAIN_DEFAULTS
    seen, ds = _record_fit_cached(monkeypatch)
    assert train.fit_sasrec_reference(ds, "split", 4, use_cache=False) == ("m", "f", False)
    assert seen["key"] == {"model": "SASRec", "dataset": "toy", **cfg01} and seen["seed"] == 4
    assert {k: seen[k] for k in TRAIN_DEFAULTS} == fit01 and seen["max_len"] == cfg01["max_len"]
    assert seen["model"].item_emb.weight.shape[1] == cfg01["hidden"]


def test_the_reference_sasrec_in_a_smoke_run_is_small_and_never_cached(monkeypatch):
    """smoke=True shrinks the model and the schedule as the notebooks' smoke runs do and trains without the cache (a
    smoke run must not read or write a default-size fit under the same key); the defaults are unchanged otherwise."""
    from lib.models.sasrec import TRAIN_DEFAULTS
    seen, ds = _record_fit_cached(monkeypatch)
    train.fit_sasrec_reference(ds, "split", 1, smoke=True)
    assert seen["use_cache"] is False and seen["epochs"] == 1 and seen["decay_epochs"] == 1
    assert seen["model"].item_emb.weight.shape[1] == 16 and seen["max_len"] == 20 == seen["key"]["max_len"]
    assert seen["lr"] == TRAIN_DEFAULTS["lr"] and seen["batch_size"] == TRAIN_DEFAULTS["batch_size"]
