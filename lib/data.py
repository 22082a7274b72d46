"""Datasets as RecBole atomic files, chronological sequences, leave-one-out and K-event splits.

Taught in notebook 00 (data tour); every later notebook starts from `load_dataset` and `leave_one_out` (or
`last_k_events`: each user's last K items as test events, each predicted from its full prefix; K = 1 is leave-one-out).

Input that would be read wrongly is refused or fixed, loudly: timestamps must be numbers and present (a
``timestamp:token`` column of numbers is converted; anything else is refused naming the file, line and column); exact
duplicate rows of the ``.inter`` file are dropped with a printed count (two copies of one interaction would become one
user's validation and test item); a UTF-8 byte order mark is skipped; a duplicated item id in the ``.item`` file is
reported (its first row is used).

Atomic files (RecBole's format): ``<name>/<name>.inter``, ``.item``, ``.user``; tab-separated, the first
line is a typed header such as ``user_id:token  item_id:token  rating:float  timestamp:float``. Types are
``token``, ``token_seq`` (space-separated tokens), ``float``, ``float_seq``.

Ordering rule: each user's interactions are sorted by timestamp with a *stable* sort, so interactions
with the same timestamp keep the order in which they appear in the ``.inter`` file. ML-100K has many
such ties (several ratings in the same second); this rule makes the sequences, and so every result,
deterministic. Files without a timestamp column keep file order entirely.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

VALID_TYPES = ("token", "token_seq", "float", "float_seq")
BUILTIN = ("ml-100k",)  # shipped inside RecBole's wheel
PAD = 0  # item index 0 is padding; real items are 1..n_items-1


class DataError(ValueError):
    """A dataset file or dataset parameter is wrong; the message says what and what is valid."""


# --------------------------------------------------------------------------- locating files
def recbole_example_dir(name: str = "ml-100k") -> Path:
    """The folder ``recbole/dataset_example/<name>/`` in RecBole's installed wheel, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'ml-100k' comes from the 'recbole' package, which is not installed; "
                        "run `make test` or `make run` once (it installs recbole with --no-deps)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name
    if not folder.is_dir():
        raise DataError(f"RecBole is installed but has no folder {folder}")
    return folder


def dataset_dir(dataset: str | Path) -> Path:
    """Resolve the ``dataset`` parameter: a built-in name (``ml-100k``) or a path to a folder of atomic files. A
    relative path is taken from the repository root (`lib.utils.repo_path`), wherever the code runs: a notebook's
    kernel runs in notebooks/, `lib.run` in the root, and ``data/ml-1m`` means the same folder to both."""
    if str(dataset) in BUILTIN:
        return recbole_example_dir(str(dataset))
    from lib.utils import repo_path

    folder = repo_path(dataset)
    if folder.is_dir():
        if not (folder / f"{folder.name}.inter").is_file():
            raise DataError(f"dataset folder {folder} has no file {folder.name}.inter; a dataset folder holds "
                            f"RecBole atomic files named after it: {folder.name}.inter (required), "
                            f"{folder.name}.item, {folder.name}.user (optional)")
        return folder
    raise DataError(f"unknown dataset {str(dataset)!r} (no folder {folder}): valid values are {', '.join(BUILTIN)} or "
                    f"the path of an existing folder of RecBole atomic files, relative to the repository root or "
                    f"absolute (e.g. data/ml-1m with data/ml-1m/ml-1m.inter)")


# --------------------------------------------------------------------------- reading one file
def read_atomic(path: str | Path) -> pd.DataFrame:
    """Read one atomic file into a DataFrame; column names lose their ``:type`` suffix.

    token/token_seq columns stay strings (token_seq keeps its spaces); float columns become float64 (an empty
    field is NaN). Lines end in \\n, \\r\\n or \\r; fields are split at every tab, with no quoting.
    Errors name the file and line. pandas' C reader parses the body: 1M rows (ML-1M's size) in about 0.3 s,
    15-20 times faster than splitting lines in Python.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing dataset file {path}")
    header, body = _split_header(path, path.read_bytes())
    names, types = _parse_header(path, header)
    n_lines = _check_field_counts(path, body, names)
    df = _read_body(path, body, names, types)
    if len(df) != n_lines:   # cannot happen while pandas splits lines as _line_ends does; never return short data
        raise DataError(f"{path}: {n_lines} lines after the header but {len(df)} rows were read")
    df.attrs["types"] = dict(zip(names, types))
    return df


def _line_ends(a: np.ndarray) -> np.ndarray:
    """Byte offsets where the lines of ``a`` (uint8) end: each \\n, each \\r not followed by \\n, and the
    end of a last line that has no terminator. Line k (from 0) ends at the k-th offset."""
    ends = np.flatnonzero(a == 10)
    if (a == 13).any():
        cr = np.flatnonzero(a == 13)
        nxt = np.minimum(cr + 1, len(a) - 1)
        lone = cr[(cr + 1 >= len(a)) | (a[nxt] != 10)]
        ends = np.union1d(ends, lone)
    if len(a) and (len(ends) == 0 or ends[-1] != len(a) - 1):
        ends = np.append(ends, len(a))
    return ends


def _split_header(path: Path, raw: bytes) -> tuple[str, bytes]:
    """The header line (decoded) and the bytes after it; an empty or blank first line is an error. A UTF-8 byte order
    mark (Windows editors write one) is dropped, as Python's utf-8-sig codec does: it would become part of the
    first column's name ("\\ufeffuser_id")."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    ends = [i for i in (raw.find(b"\n"), raw.find(b"\r")) if i >= 0]
    cut = min(ends) if ends else len(raw)
    try:
        header = raw[:cut].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}, line 1: not UTF-8 text ({e.reason})") from None
    if not header.strip():
        raise DataError(f"{path}, line 1: empty file, expected a typed header such as 'item_id:token'")
    skip = 2 if raw[cut:cut + 2] == b"\r\n" else 1
    return header, raw[cut + skip:]


def _parse_header(path: Path, header: str) -> tuple[list[str], list[str]]:
    """Column names and types from the header line ``name:type<TAB>name:type...``."""
    names, types = [], []
    for col in header.split("\t"):
        name, sep, typ = col.rpartition(":")
        if not sep or not name:
            raise DataError(f"{path}, line 1: header column {col!r} has no type; write it as "
                            f"'name:type' with type one of {', '.join(VALID_TYPES)}")
        if typ not in VALID_TYPES:
            raise DataError(f"{path}, line 1: header column {col!r} has unknown type {typ!r}; "
                            f"valid types are {', '.join(VALID_TYPES)}")
        names.append(name)
        types.append(typ)
    if len(set(names)) != len(names):
        raise DataError(f"{path}, line 1: duplicate column names in header {names}")
    return names, types


def _check_field_counts(path: Path, body: bytes, names: list[str]) -> int:
    """Every line after the header has as many tab-separated fields as the header (counted on the bytes:
    UTF-8 never puts a tab or line-end byte inside a character); the first line that does not is named.
    Returns the number of lines."""
    a = np.frombuffer(body, dtype=np.uint8)
    tabs_before = np.searchsorted(np.flatnonzero(a == 9), _line_ends(a))    # (n_lines,) tabs before each end
    fields = np.diff(tabs_before, prepend=0) + 1                             # (n_lines,)
    bad = np.flatnonzero(fields != len(names))
    if len(bad):
        k = int(bad[0])
        raise DataError(f"{path}, line {k + 2}: {int(fields[k])} fields, but the header has {len(names)} "
                        f"({', '.join(names)})")
    return len(fields)


def _read_body(path: Path, body: bytes, names: list[str], types: list[str]) -> pd.DataFrame:
    """All lines after the header, one row per line (blank lines included), by pandas' C reader.

    Fast path: pandas parses the float columns itself ("" is NaN). Every string it accepts, `_float_column`
    accepts with the same value, so when it refuses one, or meets a -0 (whose sign `_float_column` keeps only
    in columns that are not all integers), the body is read again as strings and `_float_column` decides,
    naming the line of the first bad value.
    """
    floats = [n for n, t in zip(names, types) if t == "float"]
    if not body:
        return pd.DataFrame({n: pd.Series([], dtype="float64" if n in floats else str) for n in names})
    try:
        try:
            df = _read_csv(body, names, floats)
            if not any((np.signbit(df[n].to_numpy()) & (df[n].to_numpy() == 0)).any() for n in floats):
                return df
        except UnicodeDecodeError:
            raise
        except ValueError:      # a float column holds something pandas cannot parse as a number
            pass
        df = _read_csv(body, names, [])
    except UnicodeDecodeError:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            line = int(np.searchsorted(_line_ends(np.frombuffer(body, dtype=np.uint8)), e.start)) + 2
            raise DataError(f"{path}, line {line}: not UTF-8 text ({e.reason})") from None
        raise
    for n in floats:
        df[n] = _float_column(path, df[n])
    return df


def _read_csv(body: bytes, names: list[str], floats: list[str]) -> pd.DataFrame:
    """pandas' C reader on tab-separated lines, no quoting, no NA strings but "" in the ``floats`` columns."""
    return pd.read_csv(io.BytesIO(body), sep="\t", header=None, names=names, index_col=False, engine="c",
                       dtype={n: ("float64" if n in floats else str) for n in names}, keep_default_na=False,
                       na_values={n: [""] for n in floats}, na_filter=bool(floats), quoting=csv.QUOTE_NONE,
                       skip_blank_lines=False, encoding="utf-8")


def _float_column(path: Path, col: pd.Series) -> pd.Series:
    """A float column from its strings: "" is NaN, anything `pd.to_numeric` cannot read is an error."""
    vals = pd.to_numeric(col.replace("", np.nan), errors="coerce")
    bad = vals.isna() & (col != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}, line {i + 2}: column {col.name!r} is float but holds {col.iloc[i]!r}")
    return vals.astype("float64")


# --------------------------------------------------------------------------- the dataset
@dataclass
class Dataset:
    """Chronological per-user item sequences over internal ids.

    Internal item ids are 1..n_items-1 (0 is padding); internal user ids are 0..n_users-1.
    ``item_features`` is indexed by internal item id (row 0 is the padding item, all empty).
    """
    name: str
    folder: Path
    user_tokens: np.ndarray            # (U,) raw user id of each internal user
    item_tokens: np.ndarray            # (n_items,) raw item id of each internal item; [0] = "[PAD]"
    sequences: list[np.ndarray]        # U arrays of internal item ids, oldest first
    item_features: pd.DataFrame        # (n_items, ...) columns of the .item file, may have none
    user_features: pd.DataFrame | None = None
    n_interactions_raw: int = 0
    timestamps: list[np.ndarray] | None = None  # U arrays aligned with sequences, when the file has timestamps

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        """Number of item slots including the padding item 0."""
        return len(self.item_tokens)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def stats(self) -> dict:
        """LLMDiRec Table 1 style statistics."""
        n_real = self.n_items - 1
        return {"users": self.n_users, "items": n_real, "actions": self.n_interactions,
                "avg_length": self.n_interactions / max(self.n_users, 1),
                "sparsity": 1.0 - self.n_interactions / max(self.n_users * n_real, 1)}


def _k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than k interactions, repeatedly, until both hold."""
    while True:
        ucount = df["user_id"].map(df["user_id"].value_counts())
        icount = df["item_id"].map(df["item_id"].value_counts())
        keep = (ucount >= k) & (icount >= k)
        if keep.all():
            return df
        df = df[keep]


def load_dataset(dataset: str | Path = "ml-100k", k_core: int = 0, min_seq_len: int = 3) -> Dataset:
    """Read a folder of atomic files into chronological sequences.

    k_core: drop users and items with fewer than k interactions (0 = off; ML-100K is already
    20-core for users). min_seq_len: users with fewer interactions are dropped, since leave-one-out
    needs at least one training item besides the validation and test items (default 3).
    """
    _check_filters(k_core, min_seq_len)
    folder = dataset_dir(dataset)
    name = folder.name
    inter = _read_interactions(folder / f"{name}.inter")
    n_raw = int(inter.attrs.get("rows_in_file", len(inter)))
    inter = _filter(inter, name, k_core, min_seq_len)
    inter = _chronological(inter)
    items_df = _read_items(folder / f"{name}.item")
    item_tokens = _item_tokens(inter, items_df)
    item_index = {t: i for i, t in enumerate(item_tokens)}
    users = sorted(pd.unique(inter["user_id"]), key=_natural)
    sequences, timestamps = _sequences(inter, users, item_index)
    return Dataset(name=name, folder=folder, user_tokens=np.array(users, dtype=object), item_tokens=item_tokens,
                   sequences=sequences, item_features=_item_features(items_df, item_tokens, item_index),
                   user_features=_user_features(folder / f"{name}.user", users), n_interactions_raw=n_raw,
                   timestamps=timestamps)


def _check_filters(k_core, min_seq_len) -> None:
    if not isinstance(k_core, int) or k_core < 0:
        raise DataError(f"k_core must be an integer >= 0 (0 = no filtering), got {k_core!r}")
    if not isinstance(min_seq_len, int) or min_seq_len < 3:
        raise DataError(f"min_seq_len must be an integer >= 3 (leave-one-out needs train, valid and test "
                        f"items), got {min_seq_len!r}")


def _read_interactions(inter_path: Path) -> pd.DataFrame:
    """The .inter file with its user_id and item_id columns checked, plus ``_row``: each row's place in the file."""
    inter = read_atomic(inter_path)
    for col in ("user_id", "item_id"):
        if col not in inter.columns:
            raise DataError(f"{inter_path}, line 1: the header needs a '{col}:token' column; "
                            f"it has {', '.join(inter.columns)}")
    if len(inter) == 0:
        raise DataError(f"{inter_path} has a header but no interactions")
    inter = inter.reset_index(drop=True)
    if "timestamp" in inter.columns:
        inter["timestamp"] = _timestamps(inter_path, inter["timestamp"], inter.attrs.get("types", {}).get("timestamp"))
    inter["_row"] = np.arange(len(inter))
    dup = inter.duplicated([c for c in inter.columns if c != "_row"], keep="first").to_numpy()
    if dup.any():      # the same interaction twice: its two copies would be validation and test of one user
        first = int(np.flatnonzero(dup)[0])
        print(f"{inter_path}: dropped {int(dup.sum())} exact duplicate row(s) (every column equal to an earlier row; "
              f"the first at line {first + 2})")
        inter = inter[~dup]
    inter.attrs["rows_in_file"] = len(dup)
    return inter


def _timestamps(path: Path, col: pd.Series, typ: str | None) -> pd.Series:
    """The timestamp column as float64 seconds. Text (a ``timestamp:token`` column) is converted where every value is
    a number, since sorting text puts 10 before 9; a value that is not a number, or an empty one (NaN would sort last
    and make the oldest item the test item), is refused naming the file, the line and the column."""
    vals = col if typ == "float" else pd.to_numeric(col.astype(str).str.strip().replace("", np.nan), errors="coerce")
    bad = vals.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = col.iloc[i]
        what = "is empty" if raw is None or (isinstance(raw, float) and math.isnan(raw)) or str(raw).strip() == "" \
            else f"holds {raw!r}, not a number"
        raise DataError(f"{path}, line {i + 2}, column 'timestamp' ({typ or 'token'}): the timestamp {what}; every "
                        f"interaction needs a numeric timestamp (seconds since the epoch, say) to be put in time order "
                        f"({int(bad.sum())} such row(s))")
    return vals.astype("float64")


def _filter(inter: pd.DataFrame, name: str, k_core: int, min_seq_len: int) -> pd.DataFrame:
    """k-core filtering (when k_core > 0), then users with fewer than min_seq_len interactions dropped."""
    if k_core:
        inter = _k_core(inter, k_core)
    ucount = inter["user_id"].map(inter["user_id"].value_counts())
    inter = inter[ucount >= min_seq_len]
    if len(inter) == 0:
        raise DataError(f"dataset {name!r} is empty after filtering (k_core={k_core}, min_seq_len={min_seq_len}); "
                        f"lower k_core or use a larger dataset")
    return inter


def _chronological(inter: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by user, each user's in timestamp order, ties in file order (see the module docstring)."""
    keys = ["user_id", "timestamp", "_row"] if "timestamp" in inter.columns else ["user_id", "_row"]
    return inter.sort_values(keys, kind="stable")


def _read_items(item_path: Path) -> pd.DataFrame | None:
    """The .item file, or None when the dataset has none; it must have an item_id column."""
    if not item_path.is_file():
        return None
    items_df = read_atomic(item_path)
    if "item_id" not in items_df.columns:
        raise DataError(f"{item_path}, line 1: the header needs an 'item_id:token' column")
    dup = items_df["item_id"].duplicated(keep="first").to_numpy()
    if dup.any():      # the first row of each id is kept (its title and genres); the others are reported, not used
        first = int(np.flatnonzero(dup)[0])
        tok = items_df["item_id"].iloc[first]
        earlier = int(np.flatnonzero((items_df["item_id"] == tok).to_numpy())[0])
        print(f"{item_path}: {int(dup.sum())} duplicated item id(s), e.g. {tok!r} at lines {earlier + 2} and "
              f"{first + 2}; the first row of each id is used")
    return items_df


def _item_tokens(inter: pd.DataFrame, items_df: pd.DataFrame | None) -> np.ndarray:
    """(n_items,) raw item id of each internal id, [0] = "[PAD]".

    Internal item ids follow the .item file's order when there is one (else raw ids in natural order),
    so ids do not depend on the interactions and stay stable across runs and filters."""
    used = set(pd.unique(inter["item_id"]))
    if items_df is not None:
        order = list(dict.fromkeys(t for t in items_df["item_id"] if t in used))
        order += sorted(used - set(order), key=_natural)
    else:
        order = sorted(used, key=_natural)
    return np.array(["[PAD]"] + list(order), dtype=object)


def _sequences(inter: pd.DataFrame, users: list, item_index: dict) -> tuple[list[np.ndarray], list | None]:
    """Per internal user: its internal item ids oldest first, and its timestamps (None without a timestamp column).

    ``inter`` is sorted by user first, so each user's rows are contiguous, though users come in raw-string order."""
    iid = inter["item_id"].map(item_index).to_numpy(dtype=np.int64)
    uid_codes = pd.Categorical(inter["user_id"], categories=users).codes
    bounds = np.flatnonzero(np.diff(uid_codes)) + 1
    starts = np.concatenate([[0], bounds])

    def per_user(values: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = [None] * len(users)  # type: ignore[list-item]
        for start, chunk in zip(starts, np.split(values, bounds)):
            out[int(uid_codes[start])] = chunk
        return out

    sequences = per_user(iid)
    timestamps = per_user(inter["timestamp"].to_numpy(dtype=np.float64)) if "timestamp" in inter.columns else None
    return sequences, timestamps


def _item_features(items_df: pd.DataFrame | None, item_tokens: np.ndarray, item_index: dict) -> pd.DataFrame:
    """(n_items, ...) the .item file's columns (item_id aside) by internal item id; absent items stay empty."""
    cols = [c for c in (items_df.columns if items_df is not None else []) if c != "item_id"]
    feats = pd.DataFrame(index=range(len(item_tokens)), columns=cols, dtype=object)
    if items_df is not None:
        by_tok = items_df.drop_duplicates("item_id").set_index("item_id")
        present = [t for t in item_tokens[1:] if t in by_tok.index]
        feats.loc[[item_index[t] for t in present], cols] = by_tok.loc[present, cols].to_numpy()
    return feats


def _user_features(user_path: Path, users: list) -> pd.DataFrame | None:
    """The .user file's rows in internal user order, or None when there is no .user file or no user_id column."""
    if not user_path.is_file():
        return None
    udf = read_atomic(user_path)
    if "user_id" not in udf.columns:
        return None
    return udf.drop_duplicates("user_id").set_index("user_id").reindex(users).reset_index()


def _natural(tok: str):
    """Sort key: numeric tokens by value, before other tokens in string order."""
    return (0, int(tok), "") if str(tok).isdigit() else (1, 0, str(tok))


# --------------------------------------------------------------------------- item text
_TITLE = ("movie_title", "title", "name", "item_name")
_GENRE = ("genre", "genres", "class", "categories", "category")
_YEAR = ("release_year", "year")


def _pick(cols, names):
    return next((c for c in names if c in cols), None)


def item_texts(ds: Dataset, kind: str = "movie") -> list[str]:
    """One prompt per item slot (index 0, the padding item, gets ""), LLMDiRec section 4.2:

    "The movie item has following attributes: \\n Title: <TITLE> \\n Genres: <GENRES> \\n Year: <YEAR>"

    Built from whatever columns the dataset has: title, genres and year when found (by common RecBole
    column names), any other item column as "<Column>: value". Missing values are left out.
    """
    cols = list(ds.item_features.columns)
    title, genre, year = _pick(cols, _TITLE), _pick(cols, _GENRE), _pick(cols, _YEAR)
    fields = [(title, "Title"), (genre, "Genres"), (year, "Year")]
    fields += [(c, c.replace("_", " ").capitalize()) for c in cols if c not in (title, genre, year)]
    fields = [(c, label) for c, label in fields if c is not None]
    out = [""]
    for i in range(1, ds.n_items):
        parts = []
        for c, label in fields:
            v = ds.item_features.at[i, c]
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
                continue
            if c == genre:
                v = ", ".join(str(v).split())
            elif isinstance(v, float) and v.is_integer():
                v = int(v)
            parts.append(f"{label}: {v}")
        body = " \n ".join(parts) if parts else f"ID: {ds.item_tokens[i]}"
        out.append(f"The {kind} item has following attributes: \n {body}")
    return out


def item_titles(ds: Dataset) -> list[str]:
    """A short display name per item slot ("" for padding): the title column, else the raw id."""
    col = _pick(list(ds.item_features.columns), _TITLE)
    out = [""]
    for i in range(1, ds.n_items):
        v = ds.item_features.at[i, col] if col else None
        out.append(str(v) if isinstance(v, str) and v else f"item {ds.item_tokens[i]}")
    return out


def item_genres(ds: Dataset) -> list[list[str]]:
    """Genre tokens per item slot (empty list when the dataset has no genre column)."""
    col = _pick(list(ds.item_features.columns), _GENRE)
    out: list[list[str]] = [[]]
    for i in range(1, ds.n_items):
        v = ds.item_features.at[i, col] if col else None
        out.append(str(v).split() if isinstance(v, str) else [])
    return out


# --------------------------------------------------------------------------- leave-one-out and K-event splits
@dataclass
class Split:
    """A split by time. Leave-one-out (`leave_one_out`): the last item of each user is test, the second last
    validation, the rest train. K events (`last_k_events`): each user's last K items are test events, each predicted
    from its full prefix, the (K+1)-th last is validation, the rest train.

    The model code reads it one way for both: `train` (training sequences), `history(stage)[row]` and
    `targets(stage)[row]` for each row of a stage. A row is a user, except in the test stage of a K-event split, where
    it is one event (its history: train + validation + the user's earlier test events); `rows_user(stage)` gives each
    row's user."""
    train: list[np.ndarray]   # U arrays: each user's training items, oldest first
    valid: np.ndarray         # (U,) each user's validation target
    test: np.ndarray          # (U,) each user's test target, or (E,) every test event's target, users' events in order
    n_items: int              # item slots including padding
    test_user: np.ndarray | None = None   # (E,) the user of each test event (sorted); None: one test item per user
    _test_history: list | None = field(default=None, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.train)

    @property
    def n_events(self) -> int:
        """The number of test events (n_users for leave-one-out)."""
        return len(self.test)

    def rows_user(self, stage: str) -> np.ndarray:
        """(rows,) the user of each row of `stage` (0..U-1 except for a K-event split's test stage)."""
        _check_stage(stage)
        if stage == "test" and self.test_user is not None:
            return self.test_user
        return np.arange(self.n_users)

    def events_per_user(self) -> np.ndarray:
        """(U,) each user's number of test events."""
        return np.bincount(self.rows_user("test"), minlength=self.n_users)

    def history(self, stage: str) -> list[np.ndarray]:
        """What each row has seen before its target: train for 'valid'; train + valid (+ the user's earlier test
        events, on a K-event split) for 'test'."""
        _check_stage(stage)
        if stage == "valid":
            return self.train
        if self.test_user is None:
            return [np.append(t, v) for t, v in zip(self.train, self.valid)]
        if self._test_history is None:
            out, starts = [], np.searchsorted(self.test_user, np.arange(self.n_users))
            for e, u in enumerate(self.test_user.tolist()):
                out.append(np.concatenate([self.train[u], self.valid[u:u + 1], self.test[starts[u]:e]]))
            self._test_history = out
        return self._test_history

    def targets(self, stage: str) -> np.ndarray:
        _check_stage(stage)
        return self.valid if stage == "valid" else self.test

    def item_popularity(self) -> np.ndarray:
        """(n_items,) number of training interactions of each item (index 0 = padding = 0)."""
        return np.bincount(np.concatenate(self.train), minlength=self.n_items)

    def subset(self, users) -> "Split":
        """The same split restricted to `users` (in that order; same n_items; a K-event split keeps each user's
        events), so lib.metrics runs unchanged on a subset of users."""
        users = np.asarray(users, dtype=np.int64)
        if self.test_user is None:
            return Split(train=[self.train[u] for u in users], valid=self.valid[users], test=self.test[users],
                         n_items=self.n_items)
        starts = np.searchsorted(self.test_user, np.arange(self.n_users + 1))
        ev = [np.arange(starts[u], starts[u + 1]) for u in users]
        idx = np.concatenate(ev) if ev else np.zeros(0, dtype=np.int64)
        return Split(train=[self.train[u] for u in users], valid=self.valid[users], test=self.test[idx],
                     n_items=self.n_items,
                     test_user=np.repeat(np.arange(len(users)), [len(e) for e in ev]).astype(np.int64))


def _check_stage(stage):
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


def leave_one_out(ds: Dataset) -> Split:
    if any(len(s) < 3 for s in ds.sequences):
        raise DataError("leave-one-out needs at least 3 interactions per user; load with min_seq_len >= 3")
    return Split(train=[s[:-2] for s in ds.sequences],
                 valid=np.array([s[-2] for s in ds.sequences], dtype=np.int64),
                 test=np.array([s[-1] for s in ds.sequences], dtype=np.int64),
                 n_items=ds.n_items)


def last_k_events(ds: Dataset, k: int) -> Split:
    """Every held-out event (issue 34): train on each user's sequence without its last k + 1 items, validate on the
    (k+1)-th last, and test each of the last k items from its full prefix (all items before it).

    A user with n items gives min(k, n - 2) test events (it keeps at least one training item and its validation
    item). k = 1 is exactly `leave_one_out` (the same Split, every array equal). The test stage then has one row per
    event (`Split.rows_user("test")`), and `lib.metrics.evaluate(..., ranks=True)` gives each user the list of its
    events' ranks, which `compare` averages per user before resampling users (the cluster)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise DataError(f"k (test events per user) must be an integer >= 1, got {k!r}")
    if k == 1:
        return leave_one_out(ds)
    if any(len(s) < 3 for s in ds.sequences):
        raise DataError("the K-event split needs at least 3 interactions per user; load with min_seq_len >= 3")
    kept = [min(int(k), len(s) - 2) for s in ds.sequences]
    return Split(train=[s[:-(m + 1)] for s, m in zip(ds.sequences, kept)],
                 valid=np.array([s[-(m + 1)] for s, m in zip(ds.sequences, kept)], dtype=np.int64),
                 test=np.concatenate([s[-m:] for s, m in zip(ds.sequences, kept)]).astype(np.int64),
                 n_items=ds.n_items,
                 test_user=np.repeat(np.arange(len(kept)), kept).astype(np.int64))


# --------------------------------------------------------------------------- tensors for models
def pad_left(seqs: list[np.ndarray], max_len: int) -> torch.Tensor:
    """(B, max_len) LongTensor of the last max_len items of each sequence, left-padded with 0."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[r, max_len - len(s):] = s
    return torch.from_numpy(out)


def training_windows(train: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-sequence training rows: inputs seq[:-1], targets seq[1:], cut into windows of max_len.

    Each user's training sequence gives ceil((len-1)/max_len) rows, cut from the end backwards, so every
    training transition is a target exactly once per epoch (the loss is taken at every position, as in
    the original SASRec). Returns (inputs, targets), both (R, max_len), left-padded with 0.
    """
    ins, tgs = [], []
    for s in train:
        x, y = s[:-1], s[1:]
        for end in range(len(y), 0, -max_len):
            start = max(0, end - max_len)
            ins.append(x[start:end])
            tgs.append(y[start:end])
    return pad_left(ins, max_len), pad_left(tgs, max_len)
