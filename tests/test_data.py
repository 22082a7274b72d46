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
    rows = list(dict.fromkeys(rows))                # exact duplicate rows are dropped, the first kept
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


# --------------------------------------------------------------------------- the reader against its definition
def test_bad_line_deep_in_a_file_is_named(tmp_path):
    good = [f"u{n % 7}\ti{n % 11}\t{n}\n" for n in range(5000)]
    head = "user_id:token\titem_id:token\ttimestamp:float\n"
    f = tmp_path / "deep.inter"
    f.write_text(head + "".join(good[:4000]) + "u1\ti1\n" + "".join(good[4000:]))        # file line 4002
    with pytest.raises(data.DataError, match=r"deep.inter, line 4002: 2 fields, but the header has 3 "
                                             r"\(user_id, item_id, timestamp\)"):
        data.read_atomic(f)
    f.write_text(head + "".join(good[:4500]) + "u1\ti1\t12:30\n" + "".join(good[4500:]))  # file line 4502
    with pytest.raises(data.DataError, match=r"deep.inter, line 4502: column 'timestamp' is float but holds '12:30'"):
        data.read_atomic(f)
    f.write_text(head + "".join(good[:10]) + "\n" + "".join(good[10:]))                  # a blank line is a row
    with pytest.raises(data.DataError, match=r"line 12: 1 fields, but the header has 3"):
        data.read_atomic(f)


def test_line_endings_crlf_and_cr_read_like_lf(tmp_path):
    lf = tmp_path / "lf.inter"
    lf.write_bytes(INTER.encode())
    want = data.read_atomic(lf)
    for name, nl in (("crlf", b"\r\n"), ("cr", b"\r")):
        f = tmp_path / f"{name}.inter"
        f.write_bytes(INTER.encode().replace(b"\n", nl))
        got = data.read_atomic(f)
        assert got.equals(want) and got.attrs == want.attrs, name
    f = tmp_path / "crlf_bad.inter"
    f.write_bytes(b"user_id:token\titem_id:token\r\nu\ti\r\nu\ti\tx\r\n")
    with pytest.raises(data.DataError, match=r"crlf_bad.inter, line 3: 3 fields"):
        data.read_atomic(f)


def test_fields_are_literal_and_empty_floats_are_nan(tmp_path):
    f = tmp_path / "lit.inter"
    f.write_text('user_id:token\titem_id:token_seq\trating:float\n"u 1"\t#a  b\t\nu2\tNA\t-2.5e1\n')
    df = data.read_atomic(f)
    assert list(df["user_id"]) == ['"u 1"', "u2"] and list(df["item_id"]) == ["#a  b", "NA"]
    assert np.isnan(df["rating"][0]) and df["rating"][1] == -25.0 and df["rating"].dtype == np.float64
    assert df.attrs["types"] == {"user_id": "token", "item_id": "token_seq", "rating": "float"}


def test_blank_lines_are_rows_of_a_one_column_file(tmp_path):
    f = tmp_path / "one.item"
    f.write_bytes(b"item_id:token\r\na\r\n\r\n  \r\nb\n\n")
    assert list(data.read_atomic(f)["item_id"]) == ["a", "", "  ", "b", ""]
    assert _outcome(data.read_atomic, f) == _outcome(reference_read, f)


def test_integer_column_with_minus_zero_matches_definition(tmp_path):
    f = tmp_path / "z.inter"
    for body, sign in (("-0\n1\n", False), ("-0\n1.5\n", True)):   # pd.to_numeric keeps -0's sign only among floats
        f.write_text("t:float\n" + body)
        assert bool(np.signbit(data.read_atomic(f)["t"][0])) is sign
        assert _outcome(data.read_atomic, f) == _outcome(reference_read, f)


def test_not_utf8_names_file_and_line(tmp_path):
    f = tmp_path / "latin.inter"
    f.write_bytes("user_id:token\titem_id:token\nu\ti\nu\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(data.DataError, match=r"latin.inter, line 3: not UTF-8"):
        data.read_atomic(f)


def reference_read(path):
    """The definition read_atomic implements, line by line in Python (its implementation before pandas)."""
    import pandas as pd
    with open(path, encoding="utf-8") as f:                    # universal newlines: \r\n and \r become \n
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if not lines or not lines[0].strip():
        raise data.DataError(f"{path}, line 1: empty file")
    cols = [c.rpartition(":") for c in lines[0].split("\t")]
    names, types = [c[0] for c in cols], [c[2] for c in cols]
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(names):
            raise data.DataError(f"{path}, line {n}: {len(fields)} fields, but the header has {len(names)} "
                                 f"({', '.join(names)})")
        rows.append(fields)
    df = pd.DataFrame(rows, columns=names, dtype=object)
    for name, typ in zip(names, types):
        if typ == "float":
            vals = pd.to_numeric(df[name].replace("", np.nan), errors="coerce")
            bad = vals.isna() & (df[name] != "")
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise data.DataError(f"{path}, line {i + 2}: column {name!r} is float but holds {df[name].iloc[i]!r}")
            df[name] = vals.astype("float64")
        else:
            df[name] = df[name].astype(str)
    return df


def _outcome(read, path):
    try:
        df = read(path)
    except data.DataError as e:
        return "error", str(e)
    return "ok", {c: [repr(v) for v in df[c]] for c in df.columns}, [str(t) for t in df.dtypes]


fields_ = st.sampled_from(["a", "b c", "7", "-0", "2.5", "1e3", " 3 ", "", "nan", "inf", "NA", '"q', "#", "é", "x1"])
line_ends = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r"])


@settings(max_examples=60, deadline=None)
@given(header=st.sampled_from([["a:token"], ["a:token", "f:float"], ["u:token", "s:token_seq", "f:float", "g:float"]]),
       rows=st.lists(st.tuples(st.lists(fields_, min_size=0, max_size=5), line_ends), max_size=12),
       well_formed=st.booleans(), last_end=st.booleans())
def test_reader_agrees_with_line_by_line_definition(tmp_path_factory, header, rows, well_formed, last_end):
    text = "\t".join(header) + "\n"
    for fields, end in rows:
        if well_formed:
            fields = (fields * len(header) + ["x"] * len(header))[:len(header)]
        text += "\t".join(fields) + end
    if not last_end:
        text = text.rstrip("\r\n")
    f = tmp_path_factory.mktemp("ref") / "r.inter"
    f.write_bytes(text.encode())
    assert _outcome(data.read_atomic, f) == _outcome(reference_read, f)


# --------------------------------------------------------------------------- wrong input refused (issue 33, item 3)
def test_text_timestamps_are_ordered_as_numbers(tmp_path):
    inter = ("user_id:token\titem_id:token\ttimestamp:token\n"
             "u1\ta\t10\n" "u1\tb\t9\n" "u1\tc\t11\n")               # as text, 9 would sort last
    ds = data.load_dataset(write_ds(tmp_path, inter=inter))
    assert [ds.item_tokens[i] for i in ds.sequences[0]] == ["b", "a", "c"]
    assert ds.timestamps[0].tolist() == [9.0, 10.0, 11.0]


def test_a_timestamp_that_is_not_a_number_is_refused_naming_file_line_and_column(tmp_path):
    inter = ("user_id:token\titem_id:token\ttimestamp:token\n"
             "u1\ta\t10\n" "u1\tb\t2021-01-01\n" "u1\tc\t11\n")
    with pytest.raises(data.DataError, match=r"toy.inter, line 3, column 'timestamp' \(token\): the timestamp "
                                             r"holds '2021-01-01', not a number"):
        data.load_dataset(write_ds(tmp_path, inter=inter))


def test_an_empty_timestamp_is_refused_not_sorted_last(tmp_path):
    inter = ("user_id:token\titem_id:token\ttimestamp:float\n"
             "u1\ta\t10\n" "u1\tb\t\n" "u1\tc\t11\n")
    with pytest.raises(data.DataError, match=r"line 3, column 'timestamp' \(float\): the timestamp is empty"):
        data.load_dataset(write_ds(tmp_path, inter=inter))


def test_exact_duplicate_rows_are_dropped_with_a_count(tmp_path, capsys):
    inter = ("user_id:token\titem_id:token\ttimestamp:float\n"
             "u1\ta\t1\n" "u1\tb\t2\n" "u1\tb\t2\n" "u1\tc\t3\n" "u1\tc\t4\n")  # c at 3 and 4: a repeat, kept
    ds = data.load_dataset(write_ds(tmp_path, inter=inter))
    assert [ds.item_tokens[i] for i in ds.sequences[0]] == ["a", "b", "c", "c"]
    assert "dropped 1 exact duplicate row(s)" in capsys.readouterr().out and ds.n_interactions_raw == 5


def test_a_utf8_bom_is_read_as_utf8_sig(tmp_path):
    folder = write_ds(tmp_path, inter=INTER, item=ITEM)
    for f in (folder / "toy.inter", folder / "toy.item"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    ds = data.load_dataset(folder)
    assert list(ds.user_tokens) == ["u1", "u2"] and data.item_titles(ds)[1] == "Alpha Movie"
    assert list(data.read_atomic(folder / "toy.inter").columns) == ["user_id", "item_id", "timestamp"]


def test_a_duplicated_item_id_is_reported(tmp_path, capsys):
    ds = data.load_dataset(write_ds(tmp_path, inter=INTER, item=ITEM + "a\tAlpha Again\t2000\tDrama\n"))
    out = capsys.readouterr().out
    assert "1 duplicated item id(s), e.g. 'a' at lines 2 and 6" in out
    assert data.item_titles(ds)[1] == "Alpha Movie"                          # the first row is used


def test_a_relative_dataset_path_resolves_from_the_repository_root(tmp_path, monkeypatch):
    from lib import utils
    rel = "data/_test_relative_ds"
    folder = utils.REPO / rel
    try:
        folder.mkdir(parents=True)
        (folder / "_test_relative_ds.inter").write_text(INTER)
        monkeypatch.chdir(tmp_path)                          # as a kernel in notebooks/: not the repository root
        assert data.dataset_dir(rel) == folder
        assert data.load_dataset(rel).n_users == 2
        with pytest.raises(data.DataError, match="relative to the repository root"):
            data.dataset_dir("data/_no_such_dataset")
    finally:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- the K-event split (issue 34, item 4)
def _long_ds(tmp_path, lengths=(12, 3, 7)):
    rows = "".join(f"u{u}\ti{(u * 5 + j) % 13}\t{j}\n" for u, n in enumerate(lengths) for j in range(n))
    return data.load_dataset(write_ds(tmp_path, inter="user_id:token\titem_id:token\ttimestamp:float\n" + rows))


def test_k_event_split_with_k_1_is_leave_one_out(tmp_path):
    ds = _long_ds(tmp_path)
    a, b = data.last_k_events(ds, 1), data.leave_one_out(ds)
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train)) and len(a.train) == len(b.train)
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.test, b.test) and a.n_items == b.n_items
    assert a.test_user is None and b.test_user is None
    for st_ in ("valid", "test"):
        assert all(np.array_equal(x, y) for x, y in zip(a.history(st_), b.history(st_)))
        assert np.array_equal(a.targets(st_), b.targets(st_))


def test_k_event_split_events_prefixes_and_subset(tmp_path):
    ds = _long_ds(tmp_path)                                  # 12, 3 and 7 items
    sp = data.last_k_events(ds, 5)
    assert sp.events_per_user().tolist() == [5, 1, 5] and sp.n_events == 11 and sp.n_users == 3
    assert sp.rows_user("test").tolist() == [0] * 5 + [1] + [2] * 5 and sp.rows_user("valid").tolist() == [0, 1, 2]
    for u, s in enumerate(ds.sequences):
        m = int(sp.events_per_user()[u])
        assert list(sp.train[u]) + [sp.valid[u]] == list(s[:len(s) - m]) and len(sp.train[u]) >= 1
    hist, tgt = sp.history("test"), sp.targets("test")
    for e, u in enumerate(sp.rows_user("test")):             # every event from its full prefix
        s = list(ds.sequences[u])
        j = len(s) - int(sp.events_per_user()[u]) + (e - int(np.flatnonzero(sp.rows_user("test") == u)[0]))
        assert list(hist[e]) == s[:j] and tgt[e] == s[j]
    assert np.array_equal(sp.item_popularity(), np.bincount(np.concatenate(sp.train), minlength=sp.n_items))
    sub = sp.subset([2, 1])
    assert sub.n_users == 2 and sub.events_per_user().tolist() == [5, 1]
    assert sub.test.tolist() == sp.test[[6, 7, 8, 9, 10, 5]].tolist()
    assert [list(h) for h in sub.history("test")] == [list(hist[i]) for i in (6, 7, 8, 9, 10, 5)]
    with pytest.raises(data.DataError, match="integer >= 1"):
        data.last_k_events(ds, 0)


def test_k_event_split_runs_the_models_code_unchanged(tmp_path):
    """train.sequence_scorer builds inputs from history(stage)[row] for the rows rank_targets passes; evaluate
    returns one entry per user (a list of its events' ranks) and the groups per event."""
    import torch
    from lib import metrics, train

    ds = _long_ds(tmp_path)
    sp = data.last_k_events(ds, 3)

    class Last:                                               # scores every item by its id, plus the last item read
        def eval(self):
            return self

        def full_sort_predict(self, batch):
            seq = batch["item_seq"]
            s = torch.arange(sp.n_items, dtype=torch.float).repeat(len(seq), 1)
            s[torch.arange(len(seq)), seq[:, -1]] += 100.0
            return s
    res = train.evaluate_model(Last(), sp, max_len=4, stage="test")
    assert len(res["ranks"]) == 3 and [len(r) for r in res["ranks"]] == [3, 1, 3]
    assert res["overall"]["events"] == 7 and res["overall"]["users"] == 3
    assert sum(res[g]["events"] for g in ("cold",)) == int(metrics.group_masks(sp)["cold"].sum())
    c = metrics.compare(res, res, "HR@10")
    assert c["n_users"] == 3 and c["diff"] == 0
