"""HDRec (lib/models/hdrec.py, hdrec_prompts.py, hdrec_train.py) on a tiny randomly initialised Llama: adapter
isolation, KL direction and stop-gradient, the fusion formula against a hand computation, the shared IPL, prompt construction."""
import math

import numpy as np
import pytest
import torch

from lib import data, llm, metrics, train
from lib.models import hdrec, hdrec_prompts, hdrec_train


pytestmark = pytest.mark.usefixtures("one_thread")


N_ITEMS = 12


@pytest.fixture(scope="module")
def tok():
    return llm.load_tokenizer()


def tiny_model(tok, seed=0, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok.get_vocab()) - sum(t in tok.get_vocab() for t in llm.SPECIAL_TOKENS),
                      hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512)
    base = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    pm = llm.dual_lora(base, llm.lora_config(r=4, alpha=8, dropout=0.0))
    for n, p in pm.named_parameters():             # B = 0 at init would leave lora_A without a gradient
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    texts = [""] + [f" movie {i} (199{i % 10}), Drama" for i in range(1, N_ITEMS)]
    prompts = hdrec_prompts.Prompts(tok, texts)
    E_srs = torch.randn(N_ITEMS, 8)
    return hdrec.HDRec(pm, prompts, N_ITEMS, E_srs, ipl_dropout=0.0, **kw)


def batches(model):
    w = [np.array([1, 2, 3]), np.array([4, 5, 0])]
    t = [np.array([2, 3, 4]), np.array([5, 6, 0])]
    return model.prompts.seq_text(w, t), model.prompts.seq_id(w, t), model.prompts.align(np.array([3, 7]))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before, model):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def groups(names):
    out = set()
    for n in names:
        if "lora_" in n:
            out.add("lora_text" if ".text." in n else "lora_id")
        elif n.startswith("ipl."):
            out.add("ipl")
        elif n.startswith("proj."):
            out.add("proj")
        elif n == "e_special":
            out.add("e_special")
        else:
            out.add("base")
    return out


def test_prompts_mark_seq_positions_and_id_slots(tok):
    model = tiny_model(tok)
    P = model.prompts
    text_b, id_b, align_b = batches(model)
    for b in (text_b, id_b):
        ids, pos, tg = b["input_ids"], b["read_pos"], b["targets"]
        assert tg.tolist() == [[2, 3, 4], [5, 6, 0]]   # padding item 0 skipped: row 1 reads 2 positions
        assert (ids.gather(1, pos[:1]) == P.SEQ).all() and (ids[1, pos[1, :2]] == P.SEQ).all()
    # ID prompt: one [ID] slot carrying the item id right before each [SEQ]
    assert (id_b["input_ids"].gather(1, id_b["read_pos"][:1] - 1) == P.ID).all()
    assert id_b["item_ids"].gather(1, id_b["read_pos"][:1] - 1).tolist() == [[1, 2, 3]]
    assert (text_b["item_ids"] == 0).all() and not (text_b["input_ids"] == P.ID).any()
    # Task 1: the target of [ALIGN] is the item itself, read at the last token
    assert align_b["targets"].tolist() == [[3], [7]]
    assert (align_b["input_ids"].gather(1, align_b["read_pos"]) == P.ALIGN).all()
    assert P.show(id_b, 0).endswith("<1>[SEQ] <2>[SEQ] <3>[SEQ]")
    # special tokens follow the vocabulary; adding them twice changes nothing
    assert (P.SEQ, P.ALIGN, P.ID) == (model.V, model.V + 1, model.V + 2)
    assert llm.add_special_tokens(tok) == {"[SEQ]": P.SEQ, "[ALIGN]": P.ALIGN, "[ID]": P.ID}


def test_embedding_uses_projector_for_id_tokens_only(tok):
    model = tiny_model(tok)
    _, id_b, _ = batches(model)
    e = model.embed(id_b["input_ids"], id_b["item_ids"])
    is_id = id_b["input_ids"] == model.prompts.ID
    expect = model.proj(model.E_srs[id_b["item_ids"][is_id]])
    assert torch.allclose(e[is_id], expect)
    is_seq = id_b["input_ids"] == model.prompts.SEQ
    assert torch.allclose(e[is_seq], model.e_special[0].expand(int(is_seq.sum()), -1))


def test_text_phase_step_changes_text_adapter_only(tok):
    model = tiny_model(tok)
    text_b, id_b, align_b = batches(model)
    opt = hdrec_train.optimizer(model, 1e-2, 1e-2)
    with torch.no_grad():
        model.set_phase("id")
        z_id = model(id_b)
    before = snapshot(model)
    model.set_phase("text")
    loss, _, _ = hdrec_train.text_objective(model, text_b, z_id, 0.5, align_b)
    hdrec_train.update(opt, loss)
    assert groups(changed(before, model)) == {"lora_text", "ipl", "e_special"}
    text_lora = llm.adapter_parameters(model.llm, "text")
    assert all(n in {m.removeprefix("llm.") for m in changed(before, model)} for n in text_lora), \
        "every text LoRA matrix (A and B) moved"


def test_id_phase_step_changes_id_adapter_only(tok):
    model = tiny_model(tok)
    text_b, id_b, _ = batches(model)
    opt = hdrec_train.optimizer(model, 1e-2, 1e-2)
    with torch.no_grad():
        model.set_phase("text")
        z_text = model(text_b)
    before = snapshot(model)
    model.set_phase("id")
    loss, _, _ = hdrec_train.id_objective(model, id_b, z_text, 0.5)
    hdrec_train.update(opt, loss)
    assert groups(changed(before, model)) == {"lora_id", "ipl", "proj", "e_special"}


def test_kl_matches_hand_computation_and_direction():
    zp = torch.tensor([[[1.0, 0.0, -1.0]]])
    zq = torch.tensor([[[0.0, 2.0, 0.0]]])
    tg = torch.tensor([[1]])
    p, q = np.exp([1, 0, -1]) / np.exp([1, 0, -1]).sum(), np.exp([0, 2, 0]) / np.exp([0, 2, 0]).sum()
    assert math.isclose(hdrec.kl(zp, zq, tg).item(), float((p * np.log(p / q)).sum()), rel_tol=1e-5)
    assert math.isclose(hdrec.kl(zq, zp, tg).item(), float((q * np.log(q / p)).sum()), rel_tol=1e-5)
    assert not math.isclose(hdrec.kl(zp, zq, tg).item(), hdrec.kl(zq, zp, tg).item(), rel_tol=1e-3)
    # positions without a target are left out
    z2p, z2q = torch.cat([zp, zq], 1), torch.cat([zq, zq], 1)
    assert math.isclose(hdrec.kl(z2p, z2q, torch.tensor([[1, 0]])).item(), hdrec.kl(zp, zq, tg).item(), rel_tol=1e-6)


def test_kl_stop_gradient_reaches_only_second_argument():
    zp = torch.randn(2, 3, 5, requires_grad=True)
    zq = torch.randn(2, 3, 5, requires_grad=True)
    hdrec.kl(zp, zq, torch.ones(2, 3, dtype=torch.long)).backward()
    assert zp.grad is None and zq.grad is not None and zq.grad.abs().sum() > 0


@pytest.mark.parametrize("phase", ["text", "id"])
def test_kl_gradients_reach_only_the_intended_adapter(tok, phase):
    model = tiny_model(tok)
    text_b, id_b, _ = batches(model)
    # the other side computed WITH a graph: the KL must still not send gradient into it
    model.set_phase("text" if phase == "id" else "id", trainable=("text", "id"))
    other = model(text_b if phase == "id" else id_b)
    model.set_phase(phase, trainable=("text", "id"))
    z = model(text_b if phase == "text" else id_b)
    hdrec.kl(other, z, text_b["targets"]).backward()
    got = {n for n, p in model.llm.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got and all(f".{phase}." in n for n in got), "KL gradient reaches only the adapter being optimised"
    base = llm.base_parameters(model.llm)
    assert all(p.grad is None for p in base.values())


def test_dla_step_updates_both_adapters_never_base(tok):
    model = tiny_model(tok)
    text_b, id_b, align_b = batches(model)
    opt = hdrec_train.optimizer(model, 1e-2, 1e-2)
    before = snapshot(model)
    logs = hdrec_train.dla_step(model, opt, text_b, id_b, 0.5, T=2, align_b=align_b)
    assert set(logs) == {"ce_text", "kl_text", "ce_id", "kl_id", "align"}
    assert "base" not in groups(changed(before, model))
    assert {"lora_text", "lora_id", "ipl", "proj"} <= groups(changed(before, model))
    with pytest.raises(ValueError, match="T >= 2"):
        hdrec_train.dla_step(model, opt, text_b, id_b, 0.5, T=1)


def test_dla_alternation_order_and_count(tok, monkeypatch):
    """T = 3: updates go id, text, id, text (Algorithm 1: text when t > 1, id when t < T)."""
    model = tiny_model(tok)
    text_b, id_b, _ = batches(model)
    opt = hdrec_train.optimizer(model, 1e-2, 1e-2)
    order = []
    real = hdrec_train.update

    def spy(o, loss):
        order.append(model.llm.active_adapter)
        real(o, loss)
    monkeypatch.setattr(hdrec_train, "update", spy)
    hdrec_train.dla_step(model, opt, text_b, id_b, 0.5, T=3)
    assert order == ["id", "text", "id", "text"]


def test_joint_step_sends_both_gradients_in_one_backward(tok):
    model = tiny_model(tok)
    text_b, id_b, align_b = batches(model)
    opt = hdrec_train.optimizer(model, 1e-2, 1e-2)
    before = snapshot(model)
    logs = hdrec_train.joint_step(model, opt, text_b, id_b, 0.5, align_b)
    assert {"ce_text", "ce_id", "kl_text", "kl_id"} <= set(logs)
    assert groups(changed(before, model)) == {"lora_text", "lora_id", "ipl", "proj", "e_special"}


def test_ipl_is_shared_by_both_paths(tok):
    model = tiny_model(tok)
    text_b, id_b, _ = batches(model)
    assert sum(isinstance(m, hdrec.IPL) for m in model.modules()) == 1
    for adapter, b in (("text", text_b), ("id", id_b)):
        model.zero_grad(set_to_none=True)
        model.set_phase(adapter)
        hdrec.ce_loss(model(b), b["targets"]).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.ipl.parameters()), adapter
    # one IPL object serves both paths: both adapters' logits are that module applied to their hidden states
    assert model.ipl is next(m for m in model.modules() if isinstance(m, hdrec.IPL))


def test_fusion_matches_hand_computation():
    z_text = torch.tensor([0.5, 1.0, -1.0, 2.0])
    z_id = torch.tensor([2.0, -1.0, 0.0, 3.0])
    alpha, eps = 0.7, 1e-8
    mu = (2 - 1 + 0 + 3) / 4                                   # Eq. 13 = 1.0
    S = [1 / (1 + math.exp(-(v - mu))) for v in (2, -1, 0, 3)]  # Eq. 14
    m = -1.0                                                   # Eq. 15
    adj = [v - m + eps for v in (2, -1, 0, 3)]                 # Eq. 16
    E = [alpha * a * s for a, s in zip(adj, S)]                # Eq. 17
    final = [t + e for t, e in zip((0.5, 1.0, -1.0, 2.0), E)]  # Eq. 18
    assert torch.allclose(hdrec.fuse(z_text, z_id, alpha), torch.tensor(final), atol=1e-6)
    # item 1 has the minimum ID logit: its ID bonus is ~0 and its score stays the text logit
    assert abs(hdrec.fuse(z_text, z_id, alpha)[1].item() - 1.0) < 1e-6
    # alpha = 0 is text only; tau (released code) divides inside the sigmoid only
    assert torch.equal(hdrec.fuse(z_text, z_id, 0.0), z_text)
    tau = 2.0
    S2 = torch.sigmoid((z_id - mu) / tau)
    assert torch.allclose(hdrec.fuse(z_text, z_id, alpha, tau=tau), z_text + alpha * (z_id - m + eps) * S2)
    # Fig. 5 variants
    C = hdrec.calibrate
    assert torch.allclose(hdrec.fuse(z_text, z_id, alpha, "id"), z_id + alpha * C(z_text))
    assert torch.allclose(hdrec.fuse(z_text, z_id, alpha, "confidence"), C(z_text) + alpha * C(z_id))
    with pytest.raises(ValueError, match="valid: text, id, confidence"):
        hdrec.fuse(z_text, z_id, alpha, "late")
    # batched rows are fused independently (mean and min per row)
    zb = torch.stack([z_id, z_id + 5])
    out = hdrec.fuse(torch.stack([z_text, z_text]), zb, alpha)
    assert torch.allclose(out[0], out[1], atol=1e-5)


def test_train_modes_and_errors(tok):
    model = tiny_model(tok)
    text_b, id_b, align_b = batches(model)
    hist = hdrec_train.train(model, lambda s: (text_b, id_b, align_b), "dla", steps=2, progress=False)
    assert [h["step"] for h in hist] == [1, 2] and all(math.isfinite(h["ce_text"]) for h in hist)
    assert "kl_text" not in hdrec_train.train(model, lambda s: (text_b, id_b, None), "text", 1, progress=False)[0]
    assert set(hdrec_train.train(model, lambda s: (text_b, id_b, None), "id", 1, progress=False)[0]) == \
        {"step", "ce_id", "train_seconds", "seconds"}
    with pytest.raises(ValueError, match="valid: dla, joint, text, id"):
        hdrec_train.train(model, lambda s: (text_b, id_b, None), "late", 1)


def test_train_reads_one_batch_per_step_and_names_the_step_of_a_diverged_loss(tok, monkeypatch):
    model = tiny_model(tok)
    text_b, id_b, _ = batches(model)
    asked = []
    hist = hdrec_train.train(model, lambda s: asked.append(s) or (text_b, id_b, None), "id", 3, progress=False)
    assert asked == [0, 1, 2] and [h["step"] for h in hist] == [1, 2, 3] and not model.training
    real = hdrec_train.id_objective

    def poisoned(model_, id_b_, z, lam):                  # the third step's loss is not finite
        loss, z_id, logs = real(model_, id_b_, z, lam)
        return (loss * float("nan") if len(asked) == 3 else loss), z_id, logs
    monkeypatch.setattr(hdrec_train, "id_objective", poisoned)
    asked.clear()
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 3, batch 0: training diverged"):
        hdrec_train.train(model, lambda s: asked.append(s) or (text_b, id_b, None), "id", 5, progress=False)


def test_eval_logits_reads_valid_and_test_positions(tok):
    model = tiny_model(tok)
    split = data.Split(train=[np.array([1, 2, 3, 4]), np.array([5, 6])], valid=np.array([7, 8]),
                       test=np.array([9, 10]), n_items=N_ITEMS)
    sub = split.subset([1])
    assert sub.n_users == 1 and sub.test.tolist() == [10] and sub.n_items == N_ITEMS
    out = hdrec_train.eval_logits(model, split, L=2, progress=False)
    assert out["text"]["valid"].shape == (2, N_ITEMS) and out["id"]["test"].shape == (2, N_ITEMS)
    # the validation scores of user 0 equal a forward over train[-L:] alone (causality)
    b = model.prompts.seq_id([np.array([3, 4])], [np.zeros(2, dtype=np.int64)])
    with torch.no_grad():
        model.set_phase("id")
        z = model(b)[0, -1]
    assert torch.allclose(out["id"]["valid"][0, 1:], z[1:], atol=1e-5)
    s = train.precomputed_scorer(out["id"])(torch.tensor([1]), "test")
    assert torch.equal(s, out["id"]["test"][[1]])


def test_eval_logits_batches_by_length_and_keeps_the_users_order(tok):
    model = tiny_model(tok)
    split = data.Split(train=[np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7, 8, 9])],
                       valid=np.array([7, 8, 10]), test=np.array([9, 10, 11]), n_items=N_ITEMS)
    one = hdrec_train.eval_logits(model, split, L=4, batch_size=1, progress=False)      # no padding at all
    three = hdrec_train.eval_logits(model, split, L=4, batch_size=3, progress=False)    # one batch, sorted inside
    two = hdrec_train.eval_logits(model, split, L=4, batch_size=2, progress=False)
    for a in ("text", "id"):
        for st in ("valid", "test"):
            assert torch.allclose(three[a][st], one[a][st], atol=1e-5), (a, st)
            assert torch.allclose(two[a][st], one[a][st], atol=1e-5), (a, st)
    assert not torch.allclose(one["text"]["test"][0], one["text"]["test"][1])           # rows really differ by user


def _last_read(model, adapter, window):
    """The IPL logits at the [SEQ] after the last item of one prompt over `window`, run alone (no padding)."""
    w = [np.asarray(window)]
    b = (model.prompts.seq_text if adapter == "text" else model.prompts.seq_id)(w, [np.zeros(len(window), dtype=np.int64)])
    model.set_phase(adapter)
    with torch.no_grad():
        return model(b)[0, -1]


def test_eval_logits_gives_one_row_per_test_event_from_its_own_prefix(tok):
    """A K-event split by hand: user 0 has 3 test events, user 1 has 2. Each event is read after the last L+1 items of
    its own prefix (train, validation, the user's earlier events), each user's validation after its last L training
    items; the rows follow the split's event order, so precomputed_scorer and metrics read them per event."""
    model = tiny_model(tok)
    split = data.Split(train=[np.array([1, 2, 3, 4]), np.array([5, 6])], valid=np.array([7, 8]),
                       test=np.array([9, 10, 11, 2, 3]), n_items=N_ITEMS, test_user=np.array([0, 0, 0, 1, 1]))
    L = 2
    windows = {"test": [[3, 4, 7], [4, 7, 9], [7, 9, 10], [5, 6, 8], [6, 8, 2]],       # by hand: last L+1 of each prefix
               "valid": [[3, 4], [5, 6]]}                                           # last L training items
    trained = [[4, 7], [7, 9], [9, 10], [6, 8], [8, 2]]                             # last L items of each prefix
    assert [w.tolist() for w, _ in hdrec_train.eval_windows(split, L)] == windows["test"]
    out = hdrec_train.eval_logits(model, split, L, batch_size=2, progress=False)
    for a in ("text", "id"):
        assert out[a]["test"].shape == (5, N_ITEMS) and out[a]["valid"].shape == (2, N_ITEMS)
        for st, ws in windows.items():
            for row, w in enumerate(ws):
                assert torch.allclose(out[a][st][row, 1:], _last_read(model, a, w)[1:], atol=1e-5), (a, st, row)
        assert not torch.allclose(out[a]["test"][0], out[a]["test"][1]), "each event reads its own prefix"
    # validation-only use: one forward per user over its last L training items, the same scores, no test rows
    only = hdrec_train.eval_logits(model, split, L, adapters=("id",), progress=False, stages=("valid",))
    assert set(only["id"]) == {"valid"} and torch.allclose(only["id"]["valid"], out["id"]["valid"], atol=1e-5)
    assert [w.tolist() for w, _ in hdrec_train.eval_windows(split, L, ("valid",))] == windows["valid"]
    test_only = hdrec_train.eval_logits(model, split, L, adapters=("id",), progress=False, stages=("test",))
    assert set(test_only["id"]) == {"test"} and torch.allclose(test_only["id"]["test"], out["id"]["test"], atol=1e-5)
    # the read at the trained position: the last L items of each event's prefix
    at_l = hdrec_train.eval_logits(model, split, L, adapters=("id",), progress=False, stages=("test",),
                                   test_at_trained_position=True)["id"]["test"]
    for row, w in enumerate(trained):
        assert torch.allclose(at_l[row, 1:], _last_read(model, "id", w)[1:], atol=1e-5), row
    # the suite's metrics read the rows per event: each user's list of its events' ranks, oldest first
    r = metrics.evaluate(train.precomputed_scorer(out["text"]), split, "test", groups=False, ranks=True)
    assert [len(x) for x in r["ranks"]] == [3, 2] and r["overall"]["events"] == 5
    # leave-one-out (K = 1) is the same reading: one row per user, a test read one [SEQ] after the validation read
    loo = data.Split(train=split.train, valid=split.valid, test=np.array([9, 2]), n_items=N_ITEMS)
    z1 = hdrec_train.eval_logits(model, loo, L, adapters=("text",), progress=False)["text"]
    assert z1["test"].shape == (2, N_ITEMS) and torch.allclose(z1["test"][1], out["text"]["test"][3], atol=1e-5)
    with pytest.raises(ValueError, match="stages must be"):
        hdrec_train.eval_logits(model, split, L, progress=False, stages=("train",))


def test_joint_updates_match_dla_head_steps_on_the_same_rows(tok, monkeypatch):
    """w/o DLA with updates=2: two optimizer steps per batch (as DLA's two phases), each on half of the users;
    with updates=1 one step on all of them; more updates than users is refused."""
    model = tiny_model(tok)
    text_b, id_b, align_b = batches(model)
    B = len(text_b["input_ids"])
    opt = hdrec_train.optimizer(model, 1e-2, 1e-2)
    rows = []
    real = hdrec_train.text_objective

    def spy(m, tb, *a, **k):
        rows.append(len(tb["input_ids"]))
        return real(m, tb, *a, **k)
    monkeypatch.setattr(hdrec_train, "text_objective", spy)
    steps = lambda: opt.state[model.ipl.net[0].weight]["step"].item() if model.ipl.net[0].weight in opt.state else 0
    hdrec_train.joint_step(model, opt, text_b, id_b, 0.5, align_b, updates=1)
    assert steps() == 1 and rows == [B]
    hdrec_train.joint_step(model, opt, text_b, id_b, 0.5, align_b, updates=2)
    assert steps() == 3 and rows == [B, (B + 1) // 2, B // 2]
    with pytest.raises(ValueError, match=f"batch of {B} users into {B + 1} updates"):
        hdrec_train.joint_step(model, opt, text_b, id_b, 0.5, align_b, updates=B + 1)


def test_model_contract_and_phase(tok):
    """calculate_loss is the current phase's cross-entropy; full_sort_predict gives the scores after each user's
    last item (one adapter, or fused) and restores the phase; an objective run in the wrong phase is refused."""
    model = tiny_model(tok)
    model.eval()
    text_b, id_b, _ = batches(model)
    model.set_phase("id")
    with torch.no_grad():
        z = model(id_b)
        assert torch.allclose(model.calculate_loss(id_b), hdrec.ce_loss(z, id_b["targets"]))
    p_id = model.full_sort_predict({"id": id_b})
    assert torch.allclose(p_id, z[torch.arange(2), torch.tensor([2, 1])]), "row 1 has two items: its last read is 1"
    fused = model.full_sort_predict({"text": text_b, "id": id_b, "alpha": 0.3})
    p_text = model.full_sort_predict({"text": text_b})
    assert torch.allclose(fused, hdrec.fuse(p_text, p_id, 0.3))
    assert model.phase == ("id", ("id",)), "the phase is restored"
    with pytest.raises(RuntimeError, match="set_phase\\('text'\\)"):
        hdrec_train.text_objective(model, text_b, None, 0.0)
    with pytest.raises(ValueError, match="valid: text, id"):
        model.set_phase("both")


def test_log_prior_matches_hand_computation():
    lp = hdrec.log_prior([0, 3, 1])                      # add-one: 1, 4, 2 of 7
    assert torch.allclose(lp, torch.log(torch.tensor([1 / 7, 4 / 7, 2 / 7])))


def test_ipl_warm_start_prior_and_sasrec(tok):
    counts = np.arange(N_ITEMS)
    m = tiny_model(tok)
    default_bias = m.ipl.net[-1].bias.detach().clone()
    m.warm_start("prior", counts)
    out = m.ipl.net[-1]
    assert torch.allclose(out.bias, hdrec.log_prior(counts))
    assert not torch.equal(out.bias, default_bias)
    m.warm_start("sasrec", counts)
    d = m.E_srs.shape[1]
    assert torch.equal(out.weight[:, :d], m.E_srs) and not out.weight[:, d:].any()
    # an item's logit is <E_srs[i], u> + log prior(i), u = the first d features of the IPL's hidden layer
    h = torch.randn(3, m.H)
    u = m.ipl.net[:-1](h)[:, :d]
    assert torch.allclose(m.ipl(h), u @ m.E_srs.T + hdrec.log_prior(counts), atol=1e-5)
    # the constructor takes the same choice; "none" leaves PyTorch's initialisation
    m2 = tiny_model(tok)
    assert torch.equal(m2.ipl.net[-1].bias, default_bias)
    m3 = tiny_model(tok, ipl_init="sasrec", prior_counts=counts)
    assert torch.equal(m3.ipl.net[-1].weight, out.weight) and torch.equal(m3.ipl.net[-1].bias, out.bias)
    with pytest.raises(ValueError, match="unknown ipl_init 'zero'; valid: 'none', 'prior', 'sasrec'"):
        m.warm_start("zero", counts)
    with pytest.raises(ValueError, match="needs prior_counts"):
        m.warm_start("prior")
    with pytest.raises(ValueError, match=f"prior_counts has 3 entries, the IPL scores {N_ITEMS} items"):
        m.warm_start("prior", [1, 2, 3])


def test_item_texts_title_words():
    ds = data.load_dataset("ml-100k")
    full, short = hdrec_prompts.item_texts(ds), hdrec_prompts.item_texts(ds, title_words=1)
    assert len(full) == len(short) == ds.n_items and full[0] == short[0] == ""
    i = next(i for i, t in enumerate(data.item_titles(ds)) if len(t.split()) > 2)
    title = data.item_titles(ds)[i]
    assert full[i].startswith(" " + title) and short[i].startswith(" " + title.split()[0] + " (")
    assert full[i].split("(")[-1] == short[i].split("(")[-1]          # year and genres kept
    with pytest.raises(ValueError, match="title_words must be >= 1 or None"):
        hdrec_prompts.item_texts(ds, title_words=0)


def test_standardize_ipl_input_folds_mean_and_std_into_first_layer(tok):
    m = tiny_model(tok)
    text_b, id_b, _ = batches(m)
    m.set_phase("text")
    h = m.read_states(text_b)
    assert h.shape == (2, text_b["read_pos"].shape[1], m.H)
    assert torch.allclose(m.ipl(h), m(text_b))                      # forward = IPL of the read states
    lin = m.ipl.net[0]
    W, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    sample = torch.randn(50, m.H) * torch.linspace(0.5, 3.0, m.H) + 7.0
    m.standardize_ipl_input(sample)
    mean, std = sample.mean(0), sample.std(0)
    x = torch.randn(4, m.H) * 2 + 7.0
    assert torch.allclose(lin(x), ((x - mean) / std) @ W.T + b, atol=1e-4)
    z = lin(sample)                                 # standardised input: the layer sees mean 0, unit variance
    assert torch.allclose(z.mean(0), b, atol=1e-4)


def test_probe_ipl_is_the_ridge_map_through_the_sasrec_table(tok):
    counts = np.arange(N_ITEMS)
    m = tiny_model(tok, ipl_init="sasrec", prior_counts=counts)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(400, m.H, generator=g) * 3 + 5
    M, c = torch.randn(8, m.H, generator=g) / m.H ** 0.5, torch.randn(8, generator=g)
    s = h @ M.T + c                                              # a user state that is exactly linear in h
    info = m.probe_ipl(h, s)
    assert info["ridge"] == 1e-3 and info["r2_holdout"] > 0.99
    x = torch.randn(5, m.H, generator=g) * 3 + 5
    lin, d = m.ipl.net[0], 8
    u = x @ lin.weight[:d].T + lin.bias[:d]                      # the probe's prediction of the user state
    assert torch.allclose(u, x @ M.T + c, atol=0.05)
    # SiLU(x) - SiLU(-x) = x: the IPL is exactly <E_srs[i], u> + log prior(i) at the start
    assert torch.allclose(m.ipl(x), u @ m.E_srs.T + hdrec.log_prior(counts), atol=1e-4)
    # a target unrelated to h: the probe shrinks to the mean state (largest ridge, R^2 near 0 or below)
    info = m.probe_ipl(h, torch.randn(400, 8, generator=g))
    assert info["ridge"] == 10.0 and info["r2_holdout"] < 0.05
    with pytest.raises(ValueError, match="same positions"):
        m.probe_ipl(h, s[:10])
    with pytest.raises(ValueError, match="SASRec's width d=8"):
        m.probe_ipl(h, torch.randn(400, 4))


def test_probe_holds_out_whole_users_and_reports_r2_per_adapter(tok):
    counts = np.arange(N_ITEMS)
    m = tiny_model(tok, ipl_init="sasrec", prior_counts=counts)
    g = torch.Generator().manual_seed(0)
    users = np.repeat(np.arange(40), 10)                         # 40 users, 10 states each
    kinds = np.tile(np.repeat(["text", "id"], 5), 40)
    h = torch.randn(400, m.H, generator=g) * 3 + 5
    M = torch.randn(8, m.H, generator=g) / m.H ** 0.5
    s = h @ M.T
    noisy = torch.from_numpy(kinds == "text")
    s[noisy] += 4 * torch.randn(int(noisy.sum()), 8, generator=g)    # text rows: half the state is noise
    info = m.probe_ipl(h, s, groups=users, kinds=kinds)
    assert info["holdout_by"] == "user" and set(info["r2_holdout_by_kind"]) == {"text", "id"}
    r2k = info["r2_holdout_by_kind"]
    assert r2k["id"] > 0.8 and r2k["text"] < r2k["id"] - 0.2          # the noisy adapter's rows explain less
    assert m.probe_ipl(h, s)["holdout_by"] == "row"
    with pytest.raises(ValueError, match="groups has 10 entries"):
        m.probe_ipl(h, s, groups=users[:10])

def test_probe_sample_pairs_read_states_with_sasrec_states(tok):
    from lib.data import Split, pad_left
    from lib.models.sasrec import SASRec
    m = tiny_model(tok)
    train = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8]), np.array([9, 10, 11, 1, 2, 3])]
    sp = Split(train=train, valid=np.array([6, 9, 4]), test=np.array([7, 10, 5]), n_items=N_ITEMS)
    torch.manual_seed(0)
    sas = SASRec(N_ITEMS, hidden=8, n_layers=1, n_heads=1, inner=16, max_len=6).eval()
    h, s = hdrec_train.probe_sample(m, sp, sas, [0, 1, 2], L=3, max_len=6, batch_size=2, progress=False)
    # windows: user 0 [2,3,4] (3 states), user 1 [6,7] (2), user 2 [1,2] -> last 3 of [9,10,11,1,2]: [11,1,2] (3)
    assert h.shape == (2 * 8, m.H) and s.shape == (2 * 8, 8)
    enc0 = sas.encode(pad_left([train[0][:-1]], 6))[0]           # user 0 reads 1,2,3,4: states after 2,3,4
    assert torch.allclose(s[:3], enc0[-3:], atol=1e-6)
    m.set_phase("text")
    b = m.prompts.seq_text([train[0][-4:-1]], [train[0][-3:]])
    assert torch.allclose(h[:3], m.read_states(b)[0], atol=1e-5)
    assert torch.equal(s[:8], s[8:])                             # the ID prompts' states pair with the same s


def test_redraw_lora_draws_a_seeds_A_and_zeroes_B(tok):
    """evidence 06's seeds: every A redrawn from the seed alone (Kaiming-uniform bound 1/sqrt(d_in)), every B 0, so
    the model computes the base model's function; the base weights untouched; the same seed the same draw."""
    m = tiny_model(tok)                                  # tiny_model sets B != 0
    text_b, _, _ = batches(m)
    base = {n: p.detach().clone() for n, p in llm.base_parameters(m.llm).items()}
    hdrec.redraw_lora(m.llm, 1)
    A1 = {n: p.detach().clone() for n, p in m.llm.named_parameters() if "lora_A" in n}
    assert A1 and all(not p.any() for n, p in m.llm.named_parameters() if "lora_B" in n)
    assert all(p.abs().max() <= 1 / p.shape[1] ** 0.5 for p in A1.values())
    assert all(torch.equal(base[n], p) for n, p in llm.base_parameters(m.llm).items())
    hdrec.redraw_lora(m.llm, 2)
    assert not any(torch.equal(A1[n], p) for n, p in m.llm.named_parameters() if "lora_A" in n)
    hdrec.redraw_lora(m.llm, 1)
    assert all(torch.equal(A1[n], p) for n, p in m.llm.named_parameters() if "lora_A" in n)
    # B = 0: both adapters read the same states as the base model
    m.eval()
    m.set_phase("text")
    h_text = m.read_states(text_b)
    m.set_phase("id")
    assert torch.allclose(h_text, m.read_states(text_b), atol=1e-6)
    with m.llm.disable_adapter():
        assert torch.allclose(h_text, m.read_states(text_b), atol=1e-6)
