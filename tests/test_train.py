"""The fit loop: exact repeat under a seed, early stopping, best weights kept, clear NaN error."""
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
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 0"):
        train.fit(m, sp, max_len=8, epochs=1, batch_size=64, seed=0, progress=False)


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


def test_fit_cached_retrains_over_a_corrupt_file(tmp_path, monkeypatch, capsys):
    from lib import utils
    monkeypatch.setattr(utils, "CACHE", tmp_path)
    sp = toy_split()
    kw = dict(max_len=8, epochs=1, batch_size=8, lr=1e-2, progress=False)
    m1, _, _ = train.fit_cached(lambda: model(sp), sp, seed=0, key={}, **kw)
    (path,) = tmp_path.glob("fit_*.pt")
    path.write_bytes(b"not a torch file")
    m2, _, cached = train.fit_cached(lambda: model(sp), sp, seed=0, key={}, **kw)
    assert cached is False and "unreadable" in capsys.readouterr().out
    assert torch.equal(m1.item_emb.weight, m2.item_emb.weight)
    assert train.fit_cached(lambda: model(sp), sp, seed=0, key={}, **kw)[2] is True     # rewritten, readable
    assert not list(tmp_path.glob(".*tmp"))                                             # no temporary left over
