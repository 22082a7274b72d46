"""lib.data: the atomic-file reader, chronological order, leave-one-out, item prompts, errors."""
import string

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lib import data


def write_ds(tmp_path, name="toy", inter=None, item=None, user=None):
    folder = tmp_path / name
    folder.mkdir()
    if inter is not None:
        (folder / f"{name}.inter").write_text(inter)
    if item is not None:
        (folder / f"{name}.item").write_text(item)
    if user is not None:
        (folder / f"{name}.user").write_text(user)
    return folder


INTER = ("user_id:token\titem_id:token\ttimestamp:float\n"
         "u1\ta\t3\n" "u1\tb\t1\n" "u1\tc\t1\n" "u1\td\t2\n"      # b, c tie at t=1: file order b then c
         "u2\tc\t5\n" "u2\ta\t6\n" "u2\tb\t7\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "a\tAlpha Movie\t1999\tAction Sci-Fi\n" "b\tBeta\t\tDrama\n" "c\tGamma\t2001\t\n" "d\tDelta\t1980\tComedy\n")


def test_chronological_with_stable_ties(tmp_path):
    ds = data.load_dataset(write_ds(tmp_path, inter=INTER, item=ITEM))
    tok = ds.item_tokens
    assert list(ds.user_tokens) == ["u1", "u2"]
    assert [tok[i] for i in ds.sequences[0]] == ["b", "c", "d", "a"]
    assert [tok[i] for i in ds.sequences[1]] == ["c", "a", "b"]
    assert tok[0] == "[PAD]" and list(tok[1:]) == ["a", "b", "c", "d"]   # .item file order
    assert ds.n_items == 5 and ds.n_users == 2 and ds.n_interactions == 7


def test_leave_one_out(tmp_path):
    ds = data.load_dataset(write_ds(tmp_path, inter=INTER, item=ITEM))
    sp = data.leave_one_out(ds)
    a, b, c, d = 1, 2, 3, 4
    assert [list(t) for t in sp.train] == [[b, c], [c]]
    assert list(sp.valid) == [d, a] and list(sp.test) == [a, b]
    assert [list(h) for h in sp.history("test")] == [[b, c, d], [c, a]]
    assert list(sp.item_popularity()) == [0, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="stage must be"):
        sp.history("train")


def test_item_texts_follow_llmdirec_prompt(tmp_path):
    ds = data.load_dataset(write_ds(tmp_path, inter=INTER, item=ITEM))
    texts = data.item_texts(ds)
    assert texts[0] == ""
    assert texts[1] == ("The movie item has following attributes: \n Title: Alpha Movie \n "
                        "Genres: Action, Sci-Fi \n Year: 1999")
    assert texts[2] == "The movie item has following attributes: \n Title: Beta \n Genres: Drama"  # no year
    assert data.item_titles(ds)[3] == "Gamma" and data.item_genres(ds)[1] == ["Action", "Sci-Fi"]


def test_ml100k_shipped_with_recbole():
    ds = data.load_dataset("ml-100k")
    st_ = ds.stats()
    assert (st_["users"], st_["items"], st_["actions"]) == (943, 1682, 100000)
    assert min(len(s) for s in ds.sequences) == 20          # ML-100K is 20-core for users
    assert data.item_texts(ds)[1].startswith("The movie item has following attributes: \n Title: Toy Story")
    assert "recbole" in str(ds.folder) and ds.folder.name == "ml-100k"


def test_ml100k_order_is_deterministic():
    a, b = data.load_dataset("ml-100k"), data.load_dataset("ml-100k")
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))


@pytest.mark.parametrize("inter, match", [
    ("user_id\titem_id:token\nu\ti\n", r"toy.inter, line 1: header column 'user_id' has no type"),
    ("user_id:token\titem_id:tok\nu\ti\n", r"unknown type 'tok'"),
    ("user_id:token\titem_id:token\nu\ti\nu\ti\textra\n", r"toy.inter, line 3: 3 fields, but the header has 2"),
    ("user_id:token\trating:float\nu\t1\n", r"needs a 'item_id:token' column"),
    ("user_id:token\titem_id:token\tts:float\nu\ti\tnoon\n", r"line 2: column 'ts' is float but holds 'noon'"),
    ("", r"line 1: empty file"),
    ("user_id:token\titem_id:token\n", r"no interactions"),
])
def test_malformed_files_name_file_and_line(tmp_path, inter, match):
    with pytest.raises(data.DataError, match=match):
        data.load_dataset(write_ds(tmp_path, inter=inter))


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(data.DataError, match=r"unknown dataset 'nope'.*ml-100k"):
        data.load_dataset("nope")
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(data.DataError, match=r"has no file empty.inter"):
        data.load_dataset(folder)
    with pytest.raises(data.DataError, match="missing dataset file"):
        data.read_atomic(tmp_path / "x.inter")


def test_empty_after_filtering(tmp_path):
    folder = write_ds(tmp_path, inter=INTER)
    with pytest.raises(data.DataError, match=r"empty after filtering \(k_core=5"):
        data.load_dataset(folder, k_core=5)
    with pytest.raises(data.DataError, match="k_core must be an integer >= 0"):
        data.load_dataset(folder, k_core=-1)


def test_k_core_is_iterative(tmp_path):
    # k=2 drops item z (1 interaction); u3 keeps a, b but then has fewer than min_seq_len=3 items
    inter = ("user_id:token\titem_id:token\n" + "".join(f"u{u}\t{i}\n" for u, i in
             [(1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c"), (3, "a"), (3, "z"), (3, "b")]))
    ds = data.load_dataset(write_ds(tmp_path, inter=inter), k_core=2)
    assert "z" not in set(ds.item_tokens)
    assert ds.n_users == 2   # u3 lost z and is left with 2 < min_seq_len 3 items


def test_training_windows_cover_every_transition():
    train = [np.arange(1, 8), np.array([3, 4])]
    X, Y = data.training_windows(train, max_len=3)
    pairs = {(int(x), int(y)) for x, y in zip(X.flatten(), Y.flatten()) if y}
    assert pairs == {(i, i + 1) for i in range(1, 7)} | {(3, 4)}
    assert X.shape == (3, 3) and int((Y != 0).sum()) == 7
    assert data.pad_left([np.array([5, 6])], 4).tolist() == [[0, 0, 5, 6]]


tokens = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(tokens, tokens, st.integers(0, 5)), min_size=1, max_size=40))
def test_reader_and_split_properties(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("h") / "fz"
    folder.mkdir()
    body = "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    (folder / "fz.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + body)
    counts = {}
    for u, _, _ in rows:
        counts[u] = counts.get(u, 0) + 1
    if max(counts.values()) < 3:
        with pytest.raises(data.DataError, match="empty after filtering"):
            data.load_dataset(folder)
        return
    ds = data.load_dataset(folder)
    assert ds.n_interactions == sum(c for c in counts.values() if c >= 3)
    for u, seq in zip(ds.user_tokens, ds.sequences):
        expect = sorted([(t, n) for n, (uu, i, t) in enumerate(rows) if uu == u])   # time, then file order
        assert [ds.item_tokens[k] for k in seq] == [rows[n][1] for _, n in expect]
    sp = data.leave_one_out(ds)
    for s, tr, v, te in zip(ds.sequences, sp.train, sp.valid, sp.test):
        assert list(tr) + [v, te] == list(s)
        assert (s > 0).all() and (s < ds.n_items).all()
