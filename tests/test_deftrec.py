"""DeftRec's pieces (notebook 07): LightGCN, the shared-noise BPR diffusion term, the tokenizer, the retriever."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib import data, diffusion, llm
from lib.models import deftrec, deftrec_train, lightgcn


# --------------------------------------------------------------------------- LightGCN
def three_users():
    # users 0, 1, 2; items 1, 2 (item 0 is padding); u0 saw 1 (twice: counts once), u1 saw 1 and 2, u2 saw 2
    return [np.array([1, 1]), np.array([1, 2]), np.array([2])]


def test_norm_adjacency_matches_hand_values():
    A = lightgcn.norm_adjacency(three_users(), n_items=3).to_dense()     # nodes: u0 u1 u2 | i0 i1 i2
    # degrees: u0 1, u1 2, u2 1, i0 0, i1 2, i2 2
    hand = torch.zeros(6, 6)
    for u, i, du, di in ((0, 1, 1, 2), (1, 1, 2, 2), (1, 2, 2, 2), (2, 2, 1, 2)):
        hand[u, 3 + i] = hand[3 + i, u] = 1 / math.sqrt(du * di)
    assert torch.allclose(A, hand)
    assert A[3].abs().sum() == 0 and A[:, 3].abs().sum() == 0, "the padding item has no edges"


def test_propagation_is_the_layer_mean():
    train = three_users()
    A = lightgcn.norm_adjacency(train, 3)
    torch.manual_seed(0)
    m = lightgcn.LightGCN(3, 3, A, dim=4, n_layers=2)
    E0 = m.E0.weight.detach()
    Ad = A.to_dense()
    E = (E0 + Ad @ E0 + Ad @ Ad @ E0) / 3
    U, I = m.propagate()
    assert torch.allclose(U, E[:3], atol=1e-6) and torch.allclose(I, E[3:], atol=1e-6)
    # user 0 saw only item 1: after one round its vector is item 1's layer-0 row / sqrt(1 * 2)
    assert torch.allclose((Ad @ E0)[0], E0[4] / math.sqrt(2), atol=1e-6)


def test_bpr_loss_by_hand_and_negatives_are_unseen():
    train = three_users()
    m = lightgcn.LightGCN(3, 3, lightgcn.norm_adjacency(train, 3), dim=2, n_layers=0)
    with torch.no_grad():
        m.E0.weight.copy_(torch.tensor([[1., 0], [0, 1], [1, 1], [0, 0], [2., 0], [0, 3.]]))
    loss = m.bpr_loss(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert abs(loss.item() - (-math.log(1 / (1 + math.exp(-(2 - 0)))))) < 1e-6      # s_pos 2, s_neg 0
    seen = lightgcn.seen_matrix(train, 3)
    neg = lightgcn.sample_negatives(np.array([0, 0, 0, 2]), seen, 3, np.random.default_rng(0), k=5)
    assert (neg[:3] == 2).all() and (neg[3] == 1).all(), "only unseen items are drawn"


def test_lightgcn_fit_defaults_are_the_train_defaults():
    import inspect
    sig = inspect.signature(lightgcn.fit).parameters
    assert {k: sig[k].default for k in lightgcn.TRAIN_DEFAULTS} == lightgcn.TRAIN_DEFAULTS


def test_lightgcn_fit_goes_through_fit_cached(tmp_path, monkeypatch):
    from lib import train, utils
    monkeypatch.setattr(utils, "CACHE", tmp_path)
    rng = np.random.default_rng(0)
    seqs = [rng.permutation(np.arange(1, 9))[:6] for _ in range(12)]
    sp = data.Split(train=[s[:-2] for s in seqs], valid=np.array([s[-2] for s in seqs]),
                    test=np.array([s[-1] for s in seqs]), n_items=9)
    A = lightgcn.norm_adjacency(sp.train, 9)
    build = lambda: lightgcn.LightGCN(12, 9, A, dim=4, n_layers=1)
    kw = dict(key={"model": "LightGCN"}, fit_fn=lightgcn.fit, epochs=3, batch_size=16, patience=3, progress=False)
    m1, r1, c1 = train.fit_cached(build, sp, seed=5, **kw)
    m2, r2, c2 = train.fit_cached(build, sp, seed=5, **kw)
    assert (c1, c2) == (False, True) and isinstance(r2, train.FitResult)
    assert r2.history == r1.history and 0 < r1.seconds_to_best <= r1.seconds
    assert torch.equal(m1.E0.weight, m2.E0.weight)
    # the key names the model; other settings of the loop are another entry
    assert train.fit_cached(build, sp, seed=5, **dict(kw, epochs=2))[2] is False
    assert train.fit_cached(build, sp, seed=5, **dict(kw, key={"model": "LightGCN", "dim": 4}))[2] is False


def test_lightgcn_fit_keeps_its_best_epoch():
    rng = np.random.default_rng(1)
    seqs = [rng.permutation(np.arange(1, 9))[:6] for _ in range(12)]
    sp = data.Split(train=[s[:-2] for s in seqs], valid=np.array([s[-2] for s in seqs]),
                    test=np.array([s[-1] for s in seqs]), n_items=9)
    torch.manual_seed(0)
    m = lightgcn.LightGCN(12, 9, lightgcn.norm_adjacency(sp.train, 9), dim=4, n_layers=1)
    r = lightgcn.fit(m, sp, epochs=12, batch_size=8, lr=0.05, patience=3, progress=False, max_batches=2)
    vals = [h["valid_NDCG@10"] for h in r.history]
    assert r.best_valid["NDCG@10"] == max(vals) == vals[r.best_epoch - 1]
    assert r.best_epoch < len(r.history) <= r.best_epoch + 3               # early stopping, after the best
    from lib import metrics
    again = metrics.evaluate(m.scorer(), sp, "valid", groups=False)["overall"]["NDCG@10"]
    assert again == pytest.approx(max(vals)), "the best epoch's weights are back"


def test_lightgcn_scorer_maps_a_k_event_splits_rows_to_users():
    """On a K-event split the test stage has one row per event: scorer(split) scores each with its user's vector
    (the same scores as the user's row), and the per-user evaluation sees every event; without the split a row
    beyond the users is refused rather than scored as another user."""
    from lib import metrics
    rng = np.random.default_rng(2)
    seqs = [rng.permutation(np.arange(1, 12))[:9] for _ in range(5)]
    k = 3
    sp = data.Split(train=[s[:-(k + 1)] for s in seqs], valid=np.array([s[-(k + 1)] for s in seqs]),
                    test=np.concatenate([s[-k:] for s in seqs]), n_items=12, test_user=np.repeat(np.arange(5), k))
    torch.manual_seed(0)
    m = lightgcn.LightGCN(5, 12, lightgcn.norm_adjacency(sp.train, 12), dim=4, n_layers=1)
    U, I = m.tables()
    rows = torch.arange(sp.n_events)
    S = m.scorer(sp)(rows, "test")
    assert S.shape == (15, 12) and torch.allclose(S, (U @ I.T)[torch.from_numpy(sp.test_user)])
    assert torch.allclose(m.scorer(sp)(torch.arange(5), "valid"), U @ I.T)
    r = metrics.evaluate(m.scorer(sp), sp, "test", groups=False, ranks=True)
    assert len(r["ranks"]) == 5 and all(len(x) == k for x in r["ranks"]) and r["overall"]["events"] == 15
    with pytest.raises(ValueError, match="scorer\\(split\\)"):
        metrics.evaluate(m.scorer(), sp, "test", groups=False)


# --------------------------------------------------------------------------- the BPR diffusion term
class Echo(torch.nn.Module):
    """f(x_t, t, c) = x_t: a denoiser whose errors can be computed by hand."""
    dim = 2

    def forward(self, x, t, c=None, drop_cond=None):
        return x


def test_bpr_diffusion_loss_against_hand_numbers_with_shared_t_and_noise():
    sched = diffusion.Scheduler(10, "linear", beta_start=0.1, beta_end=0.5)
    ab = float(sched.alphas_cumprod[3])
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    q_pos = torch.tensor([[1.0, 0.0]])
    q_neg = torch.tensor([[[0.0, 2.0]]])
    eps = torch.tensor([[0.5, -1.0]])
    out = diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=torch.tensor([3]), eps=eps)
    code = diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=torch.tensor([3]), eps=eps, scale="code")
    # epsilon target: err = ||a q + s eps - eps||^2 with the SAME t and eps for both (Eq. 12-13: squared norms),
    # written out coordinate by coordinate (D = 2)
    err = lambda q: sum((a * q[d] + (s - 1) * eps[0, d].item()) ** 2 for d in range(2))
    ep, en = err([1.0, 0.0]), err([0.0, 2.0])
    nls = lambda x: -math.log(1 / (1 + math.exp(-x)))                                    # -log sigma(x)
    # the paper (default): squared norms in both terms, Eq. 10 and Eq. 13
    assert abs(out["diff"].item() - ep) < 1e-6, "L_Diff is the squared norm of Eq. 10, as inside L_Neg"
    assert abs(out["neg"].item() - nls(en - ep)) < 1e-6                                   # Eq. 13
    # the released code: per-coordinate means (F.mse_loss) in both terms, err / D with D = 2
    assert abs(code["diff"].item() - ep / 2) < 1e-6
    assert abs(code["neg"].item() - nls((en - ep) / 2)) < 1e-6
    for o in (out, code):                                                    # the plotted errors: squared norms
        assert o["err_neg"].shape == (1, 1)
        assert abs(o["err_pos"].item() - ep) < 1e-6 and abs(o["err_neg"].item() - en) < 1e-6
    with pytest.raises(ValueError, match="scale must be 'paper'"):
        diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=torch.tensor([3]), eps=eps, scale="mean")


def test_bpr_diffusion_loss_row_and_batch_reductions():
    """reduce='row' averages -log sigma over rows and negatives (Eq. 12-13); 'batch' (the released code) puts the
    batch-mean errors inside one sigmoid."""
    sched = diffusion.Scheduler(10, "linear", beta_start=0.1, beta_end=0.5)
    q_pos, q_neg = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[[0.0, 3.0]], [[2.0, 2.0]]])
    eps, t = torch.tensor([[0.5, -1.0], [0.2, 0.1]]), torch.tensor([3, 7])
    row = diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=t, eps=eps)
    bat = diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=t, eps=eps, reduce="batch")
    ep, en = row["err_pos"], row["err_neg"][:, 0]
    sig = lambda x: 1 / (1 + math.exp(-x))
    assert abs(row["neg"].item() - np.mean([-math.log(sig(float(en[b] - ep[b]))) for b in range(2)])) < 1e-6
    assert abs(bat["neg"].item() + math.log(sig(float(en.mean() - ep.mean())))) < 1e-6
    with pytest.raises(ValueError, match="reduce must be 'row'"):
        diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=t, eps=eps, reduce="mean")


@pytest.mark.parametrize("D", [3, 64])
@pytest.mark.parametrize("scale", [None, "paper", "code"])               # None: the default, the paper's
@pytest.mark.parametrize("reduce", ["row", "batch"])
def test_bpr_term_and_diffusion_term_share_one_scale(D, scale, reduce):
    """Issue 24: L_Diff and the errors inside L_Neg's sigmoid are on ONE scale, for any D. With
    s = diff / mean_b err_pos (err_pos: the squared norms), L_Neg = mean -log sigma(s (err_neg - err_pos)):
    s = 1 with squared norms in both terms (Eq. 10, 12-13), s = 1 / D with per-coordinate means in both (the
    released code's F.mse_loss). Before the fix, diff was divided by D and the sigmoid was not (s = 1 / D with
    the raw norms inside: the BPR term weighed D times too much)."""
    g = torch.Generator().manual_seed(D)
    B, M = 5, 2
    sched = diffusion.Scheduler(10, "linear", beta_start=0.1, beta_end=0.5)
    q_pos, q_neg = torch.randn(B, D, generator=g), 0.3 * torch.randn(B, M, D, generator=g)
    t, eps = torch.randint(0, 10, (B,), generator=g), torch.randn(B, D, generator=g)
    kw = {} if scale is None else {"scale": scale}
    out = diffusion.bpr_diffusion_loss(Echo(), sched, q_pos, q_neg, t=t, eps=eps, reduce=reduce, **kw)
    ep, en = out["err_pos"].double(), out["err_neg"].double()                          # (B,), (B, M)
    s = out["diff"].item() / ep.mean().item()
    if reduce == "row":                                                                # Eq. 12-13
        want = -F.logsigmoid(s * (en - ep[:, None])).mean().item()
    else:                                                                              # the released code
        want = -F.logsigmoid(s * (en.mean() - ep.mean())).item()
    assert abs(out["neg"].item() - want) < 1e-5 * max(1.0, abs(want)), f"L_Neg is not on L_Diff's scale s = {s}"
    assert abs(s - (1 / D if scale == "code" else 1.0)) < 1e-5, "paper: squared norms; code: per-coordinate means"


def test_shared_noise_makes_identical_items_a_coin_flip():
    """A negative equal to the positive gets the same error under shared t and eps: -log sigma(0) = log 2,
    whatever the denoiser; independent noise would not give that."""
    torch.manual_seed(0)
    net = diffusion.Denoiser(4, cond_dim=3, hidden=8)
    sched = diffusion.Scheduler(50, "linear")
    q = torch.randn(6, 4)
    out = diffusion.bpr_diffusion_loss(net, sched, q, q[:, None].repeat(1, 3, 1), torch.randn(6, 3),
                                       generator=torch.Generator().manual_seed(1))
    assert abs(out["neg"].item() - math.log(2)) < 1e-6
    with pytest.raises(ValueError, match="x0_pos must be"):
        diffusion.bpr_diffusion_loss(net, sched, q[:2], q[:, None], torch.randn(6, 3))


def test_all_pairs_loss_pairs_every_condition_with_every_target():
    """The released code's broadcast: term (i, j) has row i's t and condition with target j's x0 and eps, so
    condition i meets every target of the batch (B^2 terms, 1 in B of them matched)."""
    sched = diffusion.Scheduler(10, "linear")                              # epsilon-prediction
    f = lambda x, t, c: x + c                                              # output depends on the condition
    q, c = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    loss = deftrec_train._all_pairs_loss(f, sched, q, c, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 10, (2,), generator=g)
    eps = diffusion.randn(q.shape, g)
    ab = sched.alphas_cumprod[t]
    term = lambda i, j: ((ab[i].sqrt() * q[j] + (1 - ab[i]).sqrt() * eps[j] + c[i] - eps[j]) ** 2).mean().item()
    assert abs(loss.item() - np.mean([term(i, j) for i in range(2) for j in range(2)])) < 1e-6
    assert abs(loss.item() - np.mean([term(i, i) for i in range(2)])) > 1e-3, "not the paired loss"
    paper = deftrec_train._all_pairs_loss(f, sched, q, c, torch.Generator().manual_seed(0), scale="paper")
    assert abs(paper.item() - 2 * loss.item()) < 1e-6, "'paper': squared norms, D = 2 times the mean"
    with pytest.raises(ValueError, match="scale must be one of"):
        deftrec_train._all_pairs_loss(f, sched, q, c, torch.Generator().manual_seed(0), scale="mean")


@pytest.mark.parametrize("pairing", ["paired", "all"])
@pytest.mark.parametrize("scale", ["paper", "code"])
def test_train_diffusion_puts_both_terms_on_its_scale(monkeypatch, pairing, scale):
    """train_diffusion hands its scale to L_Diff (bpr_diffusion_loss, or _all_pairs_loss for pairing='all') and to
    L_Neg alike: the released code's row (pairing='all', negatives='batch_mean') needs scale='code' for both."""
    seen_scales = []
    real_bpr, real_all = diffusion.bpr_diffusion_loss, deftrec_train._all_pairs_loss
    monkeypatch.setattr(diffusion, "bpr_diffusion_loss",
                        lambda *a, **k: seen_scales.append(("neg", k["scale"])) or real_bpr(*a, **k))
    monkeypatch.setattr(deftrec_train, "_all_pairs_loss",
                        lambda *a, **k: seen_scales.append(("diff", k["scale"])) or real_all(*a, **k))
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(7, 4, generator=g)
    users, pos = np.arange(6) % 3, np.arange(6) % 6 + 1
    seen = lightgcn.seen_matrix([np.array([1]), np.array([2]), np.array([3])], 7)
    net, hist = deftrec_train.train_diffusion(torch.randn(6, 3, generator=g), pos, users, Q, seen,
                                        diffusion.Scheduler(10, "linear"), lambda n: 0.0, n_neg=2, pairing=pairing,
                                        negatives="batch_mean" if pairing == "all" else "mean", epochs=1,
                                        batch_size=3, hidden=8, progress=False, scale=scale)
    assert len(hist) == 1 and seen_scales and {s for _, s in seen_scales} == {scale}
    if pairing == "all":
        assert {w for w, _ in seen_scales} == {"diff", "neg"}
    with pytest.raises(ValueError, match="scale must be one of"):
        deftrec_train.train_diffusion(None, pos, users, Q, seen, diffusion.Scheduler(10, "linear"), lambda n: 0.0,
                                epochs=1, progress=False, scale="mean")


def test_train_diffusion_keeps_the_best_check_and_logs_each_epoch():
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(7, 4, generator=g)
    users, pos = np.arange(6) % 3, np.arange(6) % 6 + 1
    seen = lightgcn.seen_matrix([np.array([1]), np.array([2]), np.array([3])], 7)
    scores = iter([0.1, 0.4, 0.2, 0.3, 0.9])
    states = []

    def valid(net):
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        return next(scores)
    net, hist = deftrec_train.train_diffusion(None, pos, users, Q, seen, diffusion.Scheduler(10, "linear"), valid,
                                              n_neg=2, epochs=9, eval_every=2, patience=2, batch_size=3, hidden=8,
                                              progress=False)
    assert [h["epoch"] for h in hist if "valid_NDCG@10" in h] == [2, 4, 6, 8]    # two checks without a better one
    assert len(hist) == 8 and {"diff", "neg", "err_pos", "err_neg"} <= set(hist[0])
    for k, v in net.state_dict().items():
        assert torch.equal(v, states[1][k]), "the weights of the best check (epoch 4) are back"


@pytest.mark.parametrize("negatives", ["mean", "each"])
def test_neg_norm_gives_each_negative_its_positive_norm(monkeypatch, negatives):
    """neg_norm=True rescales the negatives that reach L_Neg to the norm of their row's positive (direction kept)."""
    got = []
    real = diffusion.bpr_diffusion_loss
    monkeypatch.setattr(diffusion, "bpr_diffusion_loss", lambda net, sched, q_pos, q_neg, *a, **k:
                        got.append((q_pos.clone(), q_neg.clone())) or real(net, sched, q_pos, q_neg, *a, **k))
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(9, 4, generator=g)
    Q[1:5] *= 5                                                      # some long, some short items
    users, pos = np.arange(6) % 3, np.arange(6) % 4 + 1
    seen = lightgcn.seen_matrix([np.array([1]), np.array([2]), np.array([3])], 9)
    for flag in (False, True):
        got.clear()
        deftrec_train.train_diffusion(None, pos, users, Q, seen, diffusion.Scheduler(10, "linear"), lambda n: 0.0,
                                n_neg=3, negatives=negatives, epochs=1, batch_size=6, hidden=8, progress=False,
                                neg_norm=flag)
        q_pos, q_neg = got[0]
        ratio = q_neg.norm(dim=-1) / q_pos.norm(dim=-1)[:, None]       # (b, n)
        if flag:
            assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)
        else:
            assert not torch.allclose(ratio, torch.ones_like(ratio), atol=1e-2)


# --------------------------------------------------------------------------- tokenizer and retriever
def test_tokenizer_masks_only_in_training():
    torch.manual_seed(0)
    enc = deftrec.Tokenizer(8, 16, K=3, rho=0.5)
    for blk in enc.modules():
        if isinstance(blk, torch.nn.Dropout):
            blk.p = 0.0                                       # isolate the mask from dropout
    q = torch.randn(5, 8)
    enc.eval()
    a, b = enc(q), enc(q)
    assert a.shape == (5, 3, 16) and torch.equal(a, b), "no mask at evaluation"
    enc.train()
    assert not torch.equal(enc(q), a), "a Bernoulli mask in training"
    m = enc.mask(torch.ones(2000, 8))
    assert abs((m == 0).float().mean().item() - 0.5) < 0.05
    enc.rho = 0.0
    assert torch.equal(enc(q), a)


def test_retriever_bonus_changes_ranks_exactly_when_a_genre_matches():
    Q = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.5]])      # item 1: cos 1 with y; item 2: cos ~0.87
    y = torch.tensor([[1.0, 0.1]])
    G = torch.tensor([[0, 0], [1, 0], [0, 1]])                   # item 1 has genre 0, item 2 genre 1
    plain = deftrec.retrieve(y, Q, pi=0)
    assert plain[0, 1] > plain[0, 2]
    same = deftrec.retrieve(y, Q, torch.tensor([0]), G, pi=0.2)  # named genre 0: the leader gets the bonus
    assert same[0, 1] > same[0, 2] and torch.allclose(same[0, 1], plain[0, 1] * 1.2)
    flip = deftrec.retrieve(y, Q, torch.tensor([1]), G, pi=0.2)  # named genre 1: the runner-up overtakes
    assert flip[0, 2] > flip[0, 1] and torch.allclose(flip[0, 1], plain[0, 1])
    assert torch.allclose(deftrec.retrieve(y, Q, how="euclidean"), -torch.cdist(y, Q))


def test_dot_retriever_keeps_the_norm_and_boosts_matches_of_either_sign():
    Q = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, -0.3], [-2.0, 0.0]])   # item 2: cosine below item 1, norm 3x
    y = torch.tensor([[1.0, 0.1]])
    cos, dot = deftrec.retrieve(y, Q, pi=0), deftrec.retrieve(y, Q, pi=0, how="dot")
    assert cos[0, 1] > cos[0, 2] and dot[0, 2] > dot[0, 1]                 # the norm decides under 'dot'
    assert torch.allclose(dot, y @ Q.T)                                     # hand: [0, 1, 2.97, -2]
    G = torch.tensor([[0], [1], [1], [0]])                                # items 1 and 2 have genre 0
    b = deftrec.retrieve(y, Q, torch.tensor([0]), G, pi=0.5, how="dot")    # genre 0 named: items 1, 2 x1.5
    assert torch.allclose(b, torch.tensor([[0.0, 1.5, 4.455, -2.0]]))
    neg = deftrec.retrieve(y, Q, torch.tensor([0]), torch.tensor([[0], [0], [0], [1]]), pi=0.5, how="dot")
    assert torch.isclose(neg[0, 3], torch.tensor(-1.0))                    # -2 + 0.5 * 2: a boost for a negative score
    with pytest.raises(ValueError, match="unknown retriever 'l1'; valid: 'cosine', 'dot', 'euclidean'"):
        deftrec.retrieve(y, Q, how="l1")


def test_condition_sources_and_errors():
    enc = {"hidden": torch.zeros(2, 3), "genre": torch.tensor([0, 1])}
    answers = torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.0, 3.0]])             # (G, H) answer embeddings
    assert torch.allclose(deftrec.condition("hidden", enc), torch.full((2, 3), 0.5))
    assert torch.allclose(deftrec.condition("generated", enc, answers), torch.sigmoid(answers))   # the named genre
    gold = deftrec.condition("gold", enc, answers, gold=torch.tensor([1, 1]), sigmoid=False)
    assert torch.equal(gold, answers[[1, 1]]), "gold reads the target's genre, not the named one"
    assert deftrec.condition("none", enc) is None
    with pytest.raises(ValueError, match="valid: hidden, generated, gold, minilm, none"):
        deftrec.condition("answer", enc, None)


# --------------------------------------------------------------------------- prompts on a tiny decoder
@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = llm.load_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2)
    base = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    pm = llm.dual_lora(base, llm.lora_config(r=2, alpha=4, dropout=0.0), names=("deftrec",))
    titles = ["", "Toy Story", "Heat", "Fargo"]
    Q, P = torch.randn(4, 8), torch.randn(2, 8)
    return deftrec.DeftLLM(pm, tok, titles, ["Drama", "Comedy"], Q, P, K=2, rho=0.2)


def test_prompt_slots_labels_and_gradients(tiny):
    b = tiny.build([0, 1], [np.array([1, 2]), np.array([3])], answers=[1, 0])
    assert ((b["slot_item"] > 0).sum(1) == torch.tensor([4, 2])).all(), "K = 2 tokens per history item"
    assert ((b["slot_user"] > 0).sum(1) == 2).all() and set(b["slot_user"][1].unique().tolist()) == {0, 2}
    for row, g in ((0, "Comedy"), (1, "Drama")):
        lab = b["labels"][row][b["labels"][row] >= 0].tolist()
        assert lab == tiny.answer_ids[tiny.genre_names.index(g)], "the labels are the answer's tokens"
        assert b["labels"][row, b["last"][row]] == tiny.answer_ids[tiny.genre_names.index(g)][0]
    loss = tiny.llm_loss(b)
    loss.backward()
    assert tiny.enc_item.ways[0].inp.weight.grad is not None and tiny.enc_user.ways[1].inp.weight.grad is not None
    assert any(p.grad is not None for n, p in tiny.llm.named_parameters() if "lora_" in n)
    tiny.zero_grad(set_to_none=True)
    e = tiny.encode([0, 1], [np.array([1, 2]), np.array([3])], progress=False)
    assert e["hidden"].shape == (2, 16) and e["genre_logits"].shape == (2, 2) and set(e["genre"].tolist()) <= {0, 1}
    # each slot holds its item's k-th token (eval mode: no mask, no dropout)
    tiny.eval()
    with torch.no_grad():
        E = tiny.embed(b)
        for pos in torch.nonzero(b["slot_item"][0]).flatten().tolist():
            i, k = int(b["slot_item"][0, pos]) - 1, int(b["slot_k"][0, pos])
            assert torch.allclose(E[0, pos], tiny.enc_item(tiny.Q[i:i + 1])[0, k])
    e2 = tiny.encode([0], [np.array([1, 2])], progress=False)
    assert torch.allclose(e2["hidden"][0], e["hidden"][0], atol=1e-5), "right padding does not change a prompt"


def test_truncate_keeps_the_first_layers():
    from transformers import LlamaConfig, LlamaForCausalLM
    m = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=4,
                                     num_attention_heads=2, num_key_value_heads=2))
    first = m.model.layers[0]
    llm.truncate(m, 2)
    assert len(m.model.layers) == 2 and m.model.layers[0] is first and m.config.num_hidden_layers == 2
    assert m(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 32)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        llm.truncate(m, 0)


def test_generate_uses_its_spacing_without_changing_the_scheduler():
    torch.manual_seed(0)
    net = diffusion.Denoiser(3, 2, hidden=8)
    cond = torch.randn(4, 2)
    sched = diffusion.Scheduler(50, "exp", timestep_spacing="leading")
    same = diffusion.Scheduler(50, "exp", timestep_spacing="trailing")
    y = deftrec.generate(net, sched, cond, 4, seed=1, steps=10, spacing="trailing")
    assert sched.timestep_spacing == "leading" and sched.timesteps.tolist() == list(range(49, -1, -1))
    ref = diffusion.sample(net, same, shape=(4, 3), cond=cond, generator=torch.Generator().manual_seed(1),
                           num_inference_steps=10)
    assert torch.equal(y, ref)
    lead = deftrec.generate(net, sched, cond, 4, seed=1, steps=10, spacing="leading", start_t=20)
    ref = diffusion.sample(net, sched, shape=(4, 3), cond=cond, generator=torch.Generator().manual_seed(1),
                           num_inference_steps=50, start_t=20, allow_signal_start=True)
    assert torch.equal(lead, ref)


def test_train_llm_takes_its_steps_through_the_loop_and_encode_keeps_the_mode(tiny):
    import copy
    users, hist, ans = [0, 1, 0, 1], [np.array([1, 2]), np.array([3]), np.array([2]), np.array([1, 3])], [1, 0, 1, 0]
    runs = []
    for _ in range(2):
        m = copy.deepcopy(tiny)
        torch.manual_seed(0)                                  # the tokenizers' masks and dropout
        runs.append(deftrec_train.train_llm(m, users, hist, ans, steps=5, batch_size=2, lr_lora=1e-2, lr_tok=1e-2,
                                            seed=0, progress=False))
    assert len(runs[0]) == 5 and all(math.isfinite(x) for x in runs[0]) and runs[0] == runs[1]
    assert not m.training, "left in eval mode"
    m.train()
    m.encode([0], [np.array([1, 2])], progress=False)
    assert m.training and m.enc_item.training, "encode gives the model its mode back"


def test_bf16_runs_the_decoder_in_bfloat16_and_keeps_float32_outside(tiny, monkeypatch):
    b = tiny.build([0, 1], [np.array([1, 2]), np.array([3])], answers=[1, 0])
    seen = []
    hook = tiny.llm.get_base_model().model.layers[0].mlp.down_proj.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))
    try:
        tiny.eval()
        with torch.no_grad():
            h32 = tiny.hidden(b)
            tiny.bf16 = True
            h16 = tiny.hidden(b)
            loss = tiny.llm_loss(b)
    finally:
        tiny.bf16 = False
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16, torch.bfloat16], "the decoder's matmuls run in bfloat16 only when asked"
    assert h16.dtype == torch.float32 and loss.dtype == torch.float32
    assert not torch.equal(h16, h32) and torch.allclose(h16, h32, atol=0.1, rtol=0.05), "rounding, not another model"


# --------------------------------------------------------------------------- what the lesson and evidence share
def test_genre_tables_label_each_item_by_its_least_common_genre():
    genres = [[], ["Drama", "Romance"], ["Drama"], ["unknown"], ["Comedy", "Drama"]]
    G, lab, IG = deftrec.genre_tables(genres)
    assert G == ["Comedy", "Drama", "Romance"]                      # 'unknown' labels nothing
    # shares: Drama 3/4, Comedy 1/4, Romance 1/4 -> item 1 'Romance', item 2 'Drama', item 4 'Comedy'
    assert lab.tolist() == [-1, 2, 1, -1, 0]
    assert IG.tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]]


def test_windows_give_training_prompts_then_valid_and_test():
    seqs = [np.array([1, 2, 3, 4, 5]), np.array([2, 3, 4, 6])]
    sp = data.Split(train=[s[:-2] for s in seqs], valid=np.array([s[-2] for s in seqs]),
                    test=np.array([s[-1] for s in seqs]), n_items=7)
    us, hs, ts, st = deftrec_train.windows(sp, n_windows=2, L=2)
    assert st.tolist() == ["train", "train", "train", "valid", "valid", "test", "test"]
    # k = 1: u0 target 3 after [1, 2]; u1 target 3 after [2]; k = 2: u0 target 2 after [1] (u1 has too few)
    assert us.tolist() == [0, 1, 0, 0, 1, 0, 1] and ts.tolist() == [3, 3, 2, 4, 4, 5, 6]
    assert [h.tolist() for h in hs] == [[1, 2], [2], [1], [2, 3], [2, 3], [3, 4], [3, 4]]


def test_windows_on_a_k_event_split_give_each_test_event_its_own_prompt():
    """K events: one test prompt per event, for the event's user, from the items before that event (its earlier test
    events included), in the test stage's row order; training and validation prompts as on any split."""
    sp = data.Split(train=[np.array([1, 2, 3]), np.array([2])], valid=np.array([4, 3]), test=np.array([5, 6, 4, 6]),
                    n_items=7, test_user=np.array([0, 0, 1, 1]))
    us, hs, ts, st = deftrec_train.windows(sp, n_windows=1, L=3)
    te = np.flatnonzero(st == "test")
    assert len(te) == sp.n_events == 4 and us[te].tolist() == sp.rows_user("test").tolist() == [0, 0, 1, 1]
    assert ts[te].tolist() == sp.test.tolist()
    assert [hs[i].tolist() for i in te] == [[2, 3, 4], [3, 4, 5], [2, 3], [2, 3, 4]]      # each event's own prefix
    va = np.flatnonzero(st == "valid")
    assert us[va].tolist() == [0, 1] and [hs[i].tolist() for i in va] == [[1, 2, 3], [2]]
    loo = data.Split(train=sp.train, valid=sp.valid, test=np.array([5, 4]), n_items=7)
    assert (deftrec_train.windows(loo, 1, 3)[3] == "test").sum() == 2                    # one per user


def test_cached_llm_pass_is_keyed_by_settings_prompts_prompt_text_and_code(monkeypatch):
    """The one place that names the LLM pass's cache file (lesson and evidence go through it): another tokenizer, other
    prompts (the same users on a K-event split instead of leave-one-out), another title in the prompts, or an edit of
    the code on its path is another pass; the same inputs are the same file. It computes the pass from the prompts it
    keys."""
    from lib import utils
    seen, computed = [], []
    monkeypatch.setattr(utils, "cached", lambda path, compute: (seen.append(path), ({}, False))[1])
    Q, P_u = torch.ones(7, 2), torch.zeros(2, 2)
    cfg = dict(deftrec_train.LLM_DEFAULTS)
    loo = data.Split(train=[np.array([1, 2, 3]), np.array([2])], valid=np.array([4, 3]), test=np.array([5, 4]),
                     n_items=7)
    events = data.Split(train=loo.train, valid=loo.valid, test=np.array([5, 6, 4, 6]), n_items=7,
                        test_user=np.array([0, 0, 1, 1]))

    def prompts(split):
        W_users, W_hist, W_target, W_stage = deftrec_train.windows(split, 1, 3)
        tr = np.flatnonzero(W_stage == "train")
        return W_users, W_hist, tr, W_target[tr] % 2

    kw = dict(dataset="ml-100k", smoke=False, seed=0, bf16=True, Q=Q, P_u=P_u, genre_names=["Drama", "War"])
    call = lambda split=loo, **more: deftrec_train.cached_llm_pass(
        lambda: None, *prompts(split), **{**kw, "cfg": cfg, "titles": ["A", "B"], **more})
    call(); call()
    call(cfg=dict(cfg, K=1))
    call(events)
    call(titles=["A", "<b>B</b>"])
    call(genre_names=["Drama", "Western"])
    monkeypatch.setattr(utils, "code_fingerprint", lambda *m: "0" * 16)
    call()
    assert seen[0] == seen[1], "the same inputs: the same file"
    assert len(set(seen[1:])) == 6, "a tokenizer setting, the prompts, a title, a genre name and the code each make another pass"
    # what it computes on a miss is llm_pass over the very prompts of the key
    monkeypatch.setattr(utils, "cached", lambda path, compute: (compute(), False))
    monkeypatch.setattr(deftrec_train, "llm_pass", lambda *a: computed.append(a) or {})
    W = prompts(events)
    deftrec_train.cached_llm_pass("build", *W, **{**kw, "cfg": cfg, "titles": ["A", "B"]})
    assert computed[0][0] == "build" and computed[0][1] is W[0] and computed[0][2] is W[1] and computed[0][5] is cfg


# --------------------------------------------------------------------------- the lesson's exercise checks
def test_check_l_neg_passes_eq13_and_fails_the_common_slips():
    assert abs(deftrec.check_l_neg(lambda ep, en: -F.logsigmoid(en - ep).mean()) - math.log(2)) < 1e-6
    assert deftrec.check_l_neg(lambda ep, en: torch.log1p(torch.exp(ep - en)).mean()) > 0     # softplus: the same
    wrong = {"the sign": lambda ep, en: -F.logsigmoid(ep - en).mean(),
             "no minus": lambda ep, en: F.logsigmoid(en - ep).mean(),
             "no log": lambda ep, en: -torch.sigmoid(en - ep).mean(),
             "a sum": lambda ep, en: -F.logsigmoid(en - ep).sum(),
             "no batch mean": lambda ep, en: -F.logsigmoid(en - ep)}
    for what, fn in wrong.items():
        with pytest.raises(AssertionError, match="L_Neg when"):
            deftrec.check_l_neg(fn)


def test_check_retrieve_passes_eq14_and_fails_the_common_slips():
    def right(y, Q, named, IG, pi):
        s = F.normalize(y, dim=1) @ F.normalize(Q, dim=1).T
        return s * (1 + pi * IG[:, named].T.float())
    deftrec.check_retrieve(right)
    deftrec.check_retrieve(lambda y, Q, named, IG, pi: deftrec.retrieve(y, Q, named, IG, pi))
    wrong = {"inner product": lambda y, Q, named, IG, pi: (y @ Q.T) * (1 + pi * IG[:, named].T.float()),
             "additive bonus": lambda y, Q, named, IG, pi: F.normalize(y, dim=1) @ F.normalize(Q, dim=1).T
             + pi * IG[:, named].T.float(),
             "bonus on the other genres": lambda y, Q, named, IG, pi: right(y, Q, named, 1 - IG, pi),
             "no bonus": lambda y, Q, named, IG, pi: right(y, Q, named, IG, 0.0)}
    for what, fn in wrong.items():
        with pytest.raises(AssertionError, match="scores at pi"):
            deftrec.check_retrieve(fn)
