"""Dataset readers and splits (SPEC §2): DGHS → the in-distribution toxic corpus, ToxiGen → test and
validation prompts tagged by category, and local MMLU-format questions.

Every dataset comes from a *source spec* (see ``hspd.models.source``): ``{"path": ...}`` reads a local CSV,
JSONL or Parquet file through ``hspd.io.read_table``; ``{"hub": ..., "revision": ..., "config": ...,
"split": ...}`` loads it with the ``datasets`` library at the pinned revision. Rows that a filter removes
are counted, never dropped silently, and every output row has a stable ``id``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from hspd.errors import DataError, ModelError
from hspd.io import read_table

# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


def load_dataset_source(spec: Mapping[str, Any], *, what: str) -> pd.DataFrame:
    """Load one table from a dataset source spec.

    Args:
        spec: ``{"path": file}`` (CSV / JSONL / Parquet), or ``{"hub": id, "revision": commit, "split": name}``
            with optional ``config`` (the dataset's configuration name) and ``file`` (``data_files`` of a
            hub repository that holds loose files). ``path`` takes precedence over ``hub``.
        what: the dataset's name in error messages ("DGHS", "ToxiGen test", ...).

    Returns:
        The table as a DataFrame with at least one row.
    """
    from hspd.models import source

    try:
        src = source(spec, what)
    except ModelError as exc:
        raise DataError(str(exc)) from None
    if src.kind == "package":
        raise DataError(f"{what}: a dataset source needs 'path' or 'hub', not 'package'")
    if src.kind == "path":
        df = read_table(src.ref, what=f"{what} file")
        where = src.ref
    else:
        df = _load_hub_dataset(src.ref, revision=src.revision, config=src.extra.get("config"),
                               split=src.extra.get("split"), data_files=src.extra.get("file"), what=what)
        where = f"{src.ref}@{src.revision}"
    if len(df) == 0:
        raise DataError(f"{what} {where}: the table has no rows")
    return df


def _load_hub_dataset(hub: str, *, revision: str, config: str | None, split: str | None, data_files, what: str):
    if not split:
        raise DataError(f"{what}: hub dataset {hub!r} needs a `split` (e.g. train or test) in its source spec")
    import datasets

    try:
        ds = datasets.load_dataset(hub, name=config, split=split, revision=revision, data_files=data_files)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (" (offline mode is on: download it once online, or point the config at a local file with "
                "`path:`)" if offline else "")
        raise DataError(f"{what}: cannot load hub dataset {hub!r} (config {config!r}, split {split!r}, revision "
                        f"{revision!r}){hint}: {exc}") from exc
    return ds.to_pandas()


def _check_columns(df: pd.DataFrame, required: Sequence[str], where: str) -> None:
    """The in-memory counterpart of ``read_table``'s check, for tables that came from the hub."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{where}: the table has no rows")


def require_strings(values: pd.Series, where: str, column: str = "text") -> None:
    """Refuse values that are present but not strings (an integer or a dict would otherwise become the text
    ``"12345"`` or ``"{'a': 1}"``), naming their 0-based data rows. Missing values are left to the caller."""
    bad = [i for i, v in enumerate(values.to_numpy(object)) if not isinstance(v, str) and not pd.isna(v)
           ] if len(values) else []
    if bad:
        kinds = sorted({type(values.iloc[i]).__name__ for i in bad})
        raise DataError(f"{where}: column {column!r} holds non-string values ({', '.join(kinds)}) in row(s) "
                        f"{_first(bad)} (0-based data rows)")


def _blank(texts: pd.Series) -> pd.Series:
    """True where a text is missing or only whitespace."""
    return texts.isna() | texts.astype("string").str.strip().eq("").fillna(True)


# ---------------------------------------------------------------------------------------------------------
# DGHS (Vidgen et al. 2021)
# ---------------------------------------------------------------------------------------------------------

DGHS_COLUMNS = ("acl.id", "text", "label", "target", "split")
DGHS_SPLITS = ("train", "dev", "test")
DGHS_LABELS = ("hate", "nothate")


def read_dghs(path) -> pd.DataFrame:
    """Read a DGHS file (CSV / JSONL / Parquet) in the release's schema.

    Extra columns (the unnamed row index, ``X1``, ``type``, ``level``, ...) are kept; ``acl.id``, ``text``,
    ``label``, ``target`` and ``split`` are required.
    """
    df = read_table(path, DGHS_COLUMNS, what="DGHS file")
    _check_columns(df, DGHS_COLUMNS, f"DGHS file {path}")
    return df


def _dghs_filters(df: pd.DataFrame, targets: Sequence[str], splits: Sequence[str], label: str) -> dict:
    """The selection as named boolean masks, in the order the split rule logs them."""
    if isinstance(targets, str) or isinstance(splits, str):
        raise DataError("DGHS selection: `targets` and `splits` must be lists of strings, not one string")
    if not targets:
        raise DataError("DGHS selection: `targets` is empty")
    if not splits:
        raise DataError("DGHS selection: `splits` is empty")
    unknown = sorted(set(splits) - set(DGHS_SPLITS))
    if unknown:
        raise DataError(f"DGHS selection: unknown split(s) {unknown}; DGHS has {list(DGHS_SPLITS)}")
    if label not in DGHS_LABELS:
        raise DataError(f"DGHS selection: unknown label {label!r}; DGHS has {list(DGHS_LABELS)}")

    def norm(col):
        return df[col].astype("string").str.strip()

    # Exact match of the whole `target` cell: a compound target such as "bla, wom" matches no code.
    return {
        "label": norm("label").eq(label).fillna(False).to_numpy(bool),
        "split": norm("split").isin(list(splits)).fillna(False).to_numpy(bool),
        "target": norm("target").isin(list(targets)).fillna(False).to_numpy(bool),
        "non-empty": ~_blank(df["text"]).to_numpy(bool),
    }


def select_dghs(df: pd.DataFrame, targets: Sequence[str], splits: Sequence[str], label: str = "hate") -> pd.DataFrame:
    """Rows of ``df`` with the given label, in one of ``splits``, whose ``target`` is exactly one of ``targets``.

    Empty texts are not removed here (``split_dghs`` does that as its own, counted step).
    """
    masks = _dghs_filters(df, targets, splits, label)
    keep = masks["label"] & masks["split"] & masks["target"]
    return df[keep]


def split_dghs(df: pd.DataFrame, *, targets: Sequence[str], splits: Sequence[str], label: str,
               source_name: str) -> tuple[pd.DataFrame, list[dict]]:
    """The ``dghs_split`` rule: select the ID texts and give them stable ids.

    Args:
        df: the DGHS table as read (any extra columns).
        targets, splits, label: the selection (config ``dghs_split``).
        source_name: where ``df`` came from, for error messages.

    Returns:
        ``(corpus, steps)``: the corpus with columns ``id`` (``"dghs-" + acl.id``), ``text``, ``target``,
        ``split``, ``label`` in source order, and ``[{"step": name, "rows": n}]``, the rows left after each
        filter step (read, label, split, target, non-empty).
    """
    _check_columns(df, DGHS_COLUMNS, f"DGHS {source_name}")
    require_strings(df["text"], f"DGHS {source_name}")
    masks = _dghs_filters(df, targets, splits, label)
    steps = [{"step": "read", "rows": len(df)}]
    keep = np.ones(len(df), dtype=bool)
    wanted = {"label": [label], "split": list(splits), "target": list(targets)}
    for name, mask in masks.items():
        before = keep.copy()
        keep &= mask
        steps.append({"step": name, "rows": int(keep.sum())})
        if not keep.any():  # an empty corpus is never a success: name the step and what the column holds
            column = name if name in wanted else "text"
            found = df.loc[before, column].map(repr).value_counts().head(8).index.tolist()
            want = f" (wanted one of {_first(wanted[name], 8)})" if name in wanted else ""
            raise DataError(f"DGHS {source_name}: no row is left after the `{name}` filter{want}; of the "
                            f"{int(before.sum())} rows before it, column {column!r} holds e.g. {', '.join(found)}")
    rows = np.flatnonzero(keep)
    sel = df.iloc[rows]

    acl = sel["acl.id"].astype("string").str.strip()
    no_id = rows[(acl.isna() | acl.eq("")).fillna(True).to_numpy(bool)]
    if len(no_id):
        raise DataError(f"DGHS {source_name}: column 'acl.id' is empty in row(s) {_first(no_id)} (0-based data rows)")
    dup = acl.duplicated(keep=False).to_numpy(bool)
    if dup.any():
        pairs = [f"{r} ({a})" for r, a in zip(rows[dup], acl[dup])]
        raise DataError(f"DGHS {source_name}: duplicate 'acl.id' in rows {_first(pairs)} (0-based data rows); "
                        "ids must be unique")

    corpus = pd.DataFrame({
        "id": ("dghs-" + acl).to_numpy(object),
        "text": sel["text"].astype(str).to_numpy(object),
        "target": sel["target"].astype("string").str.strip().to_numpy(object),
        "split": sel["split"].astype("string").str.strip().to_numpy(object),
        "label": sel["label"].astype("string").str.strip().to_numpy(object),
    })
    return corpus, steps


def _first(items, n: int = 20) -> str:
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# ---------------------------------------------------------------------------------------------------------
# ToxiGen (Hartvigsen et al. 2022), `annotated` configuration
# ---------------------------------------------------------------------------------------------------------

TOXIGEN_COLUMNS = ("text", "target_group")
TOXIGEN_CATEGORIES = {
    "gender_lgbtq": ("women", "lgbtq", "lgbtq+ folks"),
    "race_nationalities": (
        "black", "black folks / african-americans", "black/african-american folks", "asian", "asian folks",
        "latino", "latino/hispanic folks", "chinese", "chinese folks", "mexican", "mexican folks", "middle_east",
        "middle eastern folks", "native_american", "native american/indigenous folks", "native american folks",
    ),
    "religion": ("jewish", "jewish folks", "muslim", "muslim folks"),
    "disability": ("mental_dis", "folks with mental disabilities", "physical_dis", "folks with physical disabilities"),
}
OOD_CATEGORIES = ("disability",)
_GROUP_TO_CATEGORY = {g: cat for cat, groups in TOXIGEN_CATEGORIES.items() for g in groups}


def toxigen_category(target_group) -> str | None:
    """The SPEC §2 category of a ToxiGen ``target_group`` (case-insensitive, stripped), or None if unknown."""
    if not isinstance(target_group, str):
        return None
    return _GROUP_TO_CATEGORY.get(target_group.strip().lower())


def read_toxigen(path) -> pd.DataFrame:
    """Read a ToxiGen ``annotated`` table; ``text`` and ``target_group`` are required, other columns kept."""
    df = read_table(path, TOXIGEN_COLUMNS, what="ToxiGen file")
    _check_columns(df, TOXIGEN_COLUMNS, f"ToxiGen file {path}")
    return df


def _tag_toxigen(df: pd.DataFrame, part: str) -> tuple[pd.DataFrame, dict]:
    """Give each row its id from its position in the source, tag its category, drop what cannot be used."""
    _check_columns(df, TOXIGEN_COLUMNS, f"ToxiGen {part}")
    require_strings(df["text"], f"ToxiGen {part}")
    groups = df["target_group"].astype("string").str.strip()
    tagged = pd.DataFrame({
        "id": [f"toxigen-{part}-{i}" for i in range(len(df))],
        "text": df["text"].astype("string").to_numpy(object),
        "target_group": groups.to_numpy(object),
        "category": [toxigen_category(g) if isinstance(g, str) else None for g in groups.to_numpy(object)],
    })
    tagged["distribution"] = np.where(tagged["category"].isin(OOD_CATEGORIES), "OOD", "ID")
    unknown = tagged["category"].isna().to_numpy()
    empty = _blank(df["text"]).to_numpy(bool) & ~unknown
    keep = tagged[~unknown & ~empty].reset_index(drop=True)
    if keep.empty:
        found = tagged["target_group"].fillna("<missing>").value_counts().head(8).index.tolist()
        raise DataError(f"ToxiGen {part}: none of its {len(df)} rows is usable: {int(unknown.sum())} have a "
                        f"target_group outside SPEC §2's groups (e.g. {found}), {int(empty.sum())} an empty text")
    report = {
        "rows": len(df),
        "kept": len(keep),
        "excluded_unknown_group": {str(g): int(n) for g, n in
                                   tagged.loc[unknown, "target_group"].fillna("<missing>").value_counts().sort_index().items()},
        "excluded_empty_text": int(empty.sum()),
    }
    return keep, report


def split_toxigen(train_df: pd.DataFrame, test_df: pd.DataFrame, *, val_fraction: float = 0.1,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """ToxiGen test prompts (the whole test split) and seeded validation prompts (a share of train).

    The validation draw is stratified: ``round(val_fraction · n_c)`` rows of each category ``c``, drawn with
    ``numpy.random.default_rng(seed)``, kept in source order. Rows with an unknown ``target_group`` or an
    empty text are excluded and counted in the report.

    Returns:
        ``(test, val, report)``; both tables have columns ``id``, ``text``, ``target_group``, ``category``,
        ``distribution`` (``ID`` or ``OOD``).
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"ToxiGen split: val_fraction must be in (0, 1), got {val_fraction}")
    test, test_report = _tag_toxigen(test_df, "test")
    train, train_report = _tag_toxigen(train_df, "train")

    rng = np.random.default_rng(seed)
    picked = []
    for cat in TOXIGEN_CATEGORIES:  # a fixed order, so the draw depends only on the seed and the data
        rows = np.flatnonzero(train["category"].to_numpy() == cat)
        n_val = int(np.floor(val_fraction * len(rows) + 0.5))
        picked.append(rng.choice(rows, size=n_val, replace=False))
    val = train.iloc[np.sort(np.concatenate(picked))].reset_index(drop=True)

    def per_category(df):
        return {cat: int((df["category"] == cat).sum()) for cat in TOXIGEN_CATEGORIES}

    report = {
        "seed": seed,
        "val_fraction": val_fraction,
        "test": {**test_report, "per_category": per_category(test)},
        "train": {**train_report, "per_category": per_category(train)},
        "val": {"rows": len(val), "per_category": per_category(val)},
    }
    return test, val, report


# ---------------------------------------------------------------------------------------------------------
# MMLU-format questions (the demo's local lm-eval task)
# ---------------------------------------------------------------------------------------------------------

MMLU_COLUMNS = ("question", "subject", "choices", "answer")


def read_mmlu(path) -> pd.DataFrame:
    """Read MMLU-format questions: ``question`` and ``subject`` (non-empty strings), ``choices`` (a list of
    4 strings) and ``answer`` (an int in 0–3, the index of the right choice). A bad row is an error naming
    the file, row and column."""
    df = read_table(path, MMLU_COLUMNS, what="MMLU file")
    _check_columns(df, MMLU_COLUMNS, f"MMLU file {path}")
    for i, row in enumerate(df[list(MMLU_COLUMNS)].itertuples(index=False)):
        where = f"MMLU file {path}: row {i}"
        for col, value in (("question", row.question), ("subject", row.subject)):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: column {col!r} must be a non-empty string, got {value!r}")
        choices = row.choices
        if not isinstance(choices, (list, tuple, np.ndarray)) or len(choices) != 4 \
                or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: column 'choices' must be a list of 4 strings, got {choices!r}")
        answer = row.answer
        # A JSONL column with one missing value is read as floats: accept 2.0, reject 2.5 and NaN.
        if isinstance(answer, (float, np.floating)) and float(answer).is_integer():
            answer = int(answer)
        if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, np.integer)) or not 0 <= answer < 4:
            raise DataError(f"{where}: column 'answer' must be an int in 0-3 (the index of the right choice), "
                            f"got {answer!r}")
    df["choices"] = [list(c) for c in df["choices"]]
    df["answer"] = df["answer"].astype(int)
    return df
