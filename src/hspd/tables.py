"""The paper's tables from the aggregated metrics: CSV (numbers), Markdown and LaTeX (booktabs, "mean ± std").

A results table is a DataFrame with label columns (``Model``, or ``Target`` and ``Method``) followed by numeric
``<metric>_mean`` / ``<metric>_std`` columns in ``COLUMNS`` order. ``write_table_bundle`` writes the numbers as
CSV and the formatted cells as Markdown and LaTeX.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from hspd.config import ORIGINAL
from hspd.errors import DataError
from hspd.io import write_table, write_text


class Column:
    """How one metric is printed: header, scale (MMLU is stored as a fraction, printed as a percentage), digits."""

    def __init__(self, metric: str, header: str, scale: float = 1.0, digits: int = 2):
        self.metric, self.header, self.scale, self.digits = metric, header, scale, digits

    def format(self, value: float) -> str:
        return "–" if value is None or math.isnan(value) else f"{value * self.scale:.{self.digits}f}"


COLUMNS = (
    Column("tp_id", "TP ID"), Column("tp_ood", "TP OOD"), Column("emt_id", "EMT ID"), Column("emt_ood", "EMT OOD"),
    Column("ppl", "PPL"), Column("dist1", "Dist-1"), Column("dist2", "Dist-2"), Column("dist3", "Dist-3"),
    Column("mmlu", "MMLU", scale=100.0),
)

PAPER_SOURCE = "HSPD paper, Table 1 (GPT2-XL)"


def _select(summary: pd.DataFrame, rows: Sequence[tuple[str, str]], columns: Sequence[Column]) -> pd.DataFrame:
    """The summary rows for ``rows`` (target, system), in that order, with the metric mean/std columns."""
    missing_cols = [c for c in ("target", "system") if c not in summary.columns]
    missing_cols += [f"{c.metric}_mean" for c in columns if f"{c.metric}_mean" not in summary.columns]
    if missing_cols:
        raise DataError(f"summary: missing column(s) {missing_cols}; found {list(summary.columns)}")
    indexed = summary.set_index(["target", "system"])
    absent = [r for r in rows if tuple(r) not in indexed.index]
    if absent:
        raise DataError(f"summary: no results for (target, system) {absent}; it holds {list(indexed.index)}")
    out = pd.DataFrame(index=range(len(rows)))
    for c in columns:
        for stat in ("mean", "std"):
            col = f"{c.metric}_{stat}"
            values = [indexed.loc[tuple(r), col] if col in indexed.columns else math.nan for r in rows]
            out[col] = pd.Series(values, dtype=float)
    return out


def _default_name(target: str, system: str) -> str:
    return target if system == ORIGINAL else system


def table1(summary: pd.DataFrame, rows: Sequence[tuple[str, str]], names: Sequence[str] | None = None,
           columns: Sequence[Column] = COLUMNS) -> pd.DataFrame:
    """Table 1 layout: one row per (target, system), labelled ``Model``.

    Args:
        summary: ``aggregate_over_seeds`` output.
        rows: (target, system) pairs in display order; the un-fine-tuned target is system ``original``.
        names: display names, one per row (default: the target for ``original``, else the system).
    """
    names = [_default_name(*r) for r in rows] if names is None else list(names)
    if len(names) != len(rows):
        raise DataError(f"table1: {len(rows)} rows but {len(names)} names")
    return pd.concat([pd.DataFrame({"Model": names}), _select(summary, rows, columns)], axis=1)


def table3(summary: pd.DataFrame, rows: Sequence[tuple[str, str]], *, target_names: Mapping[str, str] | None = None,
           method_names: Mapping[str, str] | None = None, columns: Sequence[Column] = COLUMNS) -> pd.DataFrame:
    """Table 3 layout (the 7B targets): rows per target × method, labelled ``Target`` and ``Method``.

    Args:
        rows: (target, system) pairs in display order, grouped by target.
        target_names / method_names: display names by target and by system (default: the raw names).
    """
    target_names = dict(target_names or {})
    method_names = dict(method_names or {})
    labels = pd.DataFrame({"Target": [target_names.get(t, t) for t, _ in rows],
                           "Method": [method_names.get(c, c) for _, c in rows]})
    return pd.concat([labels, _select(summary, rows, columns)], axis=1)


def comparison_table(summary: pd.DataFrame, rows: Sequence[tuple[str, str, str]],
                     columns: Sequence[Column] = COLUMNS) -> pd.DataFrame:
    """One row per system, grouped by target, labelled ``Target`` and ``System`` (Table 1 in the paper's
    layout; UniDetox's Tables 1–2).

    Args:
        rows: (target, system, label) in display order, grouped by target (``hspd.systems.table_rows``).
    """
    labels = pd.DataFrame({"Target": [t for t, _, _ in rows], "System": [label for _, _, label in rows]})
    return pd.concat([labels, _select(summary, [(t, s) for t, s, _ in rows], columns)], axis=1)


BEST_METRICS = ("tp_id", "tp_ood", "emt_id", "emt_ood")


def best_cells(df: pd.DataFrame, metrics: Sequence[str] = BEST_METRICS, group: str = "Target") -> set[tuple[int, str]]:
    """(row, metric) of the lowest mean of each toxicity metric within each ``group`` (ties: all of them), for
    printing in bold."""
    out = set()
    groups = df.groupby(group, sort=False).groups.values() if group in df.columns else [df.index]
    for index in groups:
        for m in metrics:
            col = f"{m}_mean"
            if col not in df.columns:
                continue
            values = df.loc[index, col]
            if values.notna().any():
                out |= {(i, m) for i in values.index[values == values.min()]}
    return out


def paper_reference_rows() -> pd.DataFrame:
    """The HSPD paper's own GPT2-XL numbers (SPEC §7), in results-table form, labelled as the paper's."""
    rows = [
        ("GPT2-XL", 0.54, 0.40, 0.54, 0.41, 17.53, 0.26, 0.43, 0.46, 0.3181),
        ("UniDetox", 0.42, 0.25, 0.43, 0.30, 11.30, 0.20, 0.33, 0.37, 0.3161),
        ("HSPD", 0.18, 0.19, 0.20, 0.22, 21.45, 0.16, 0.22, 0.22, 0.3083),
    ]
    df = pd.DataFrame(rows, columns=["Model", *(f"{c.metric}_mean" for c in COLUMNS)])
    df.insert(0, "Source", PAPER_SOURCE)
    return df


# --- Writing ----------------------------------------------------------------------------------------------

def _split_columns(df: pd.DataFrame) -> tuple[list[str], list[Column]]:
    """Label columns, and the ``COLUMNS`` whose ``_mean`` the table holds (in the table's order)."""
    by_metric = {c.metric: c for c in COLUMNS}
    labels, metrics = [], []
    for col in df.columns:
        if col.endswith("_mean") and col[:-5] in by_metric:
            metrics.append(by_metric[col[:-5]])
        elif not (col.endswith("_std") and col[:-4] in by_metric):
            labels.append(col)
    if not metrics:
        raise DataError(f"results table: no <metric>_mean columns; found {list(df.columns)}")
    return labels, metrics


def format_cells(df: pd.DataFrame, bold: set[tuple[int, str]] = frozenset()) -> pd.DataFrame:
    """Label columns as they are, each metric as one "mean ± std" string column (std "–" for a single seed;
    "mean" alone when the table has no std column, as for the paper's numbers). Cells in ``bold`` ((row,
    metric) pairs, ``best_cells``) are wrapped in ``**``."""
    labels, metrics = _split_columns(df)
    out = df[labels].astype(str).copy()
    for c in metrics:
        means = df[f"{c.metric}_mean"]
        if f"{c.metric}_std" in df.columns:
            stds = df[f"{c.metric}_std"]
            cells = [c.format(m) if math.isnan(m) else f"{c.format(m)} ± {c.format(s)}" for m, s in zip(means, stds)]
        else:
            cells = [c.format(m) for m in means]
        out[c.header] = [f"**{x}**" if (i, c.metric) in bold else x for i, x in zip(df.index, cells)]
    return out


def to_markdown(df: pd.DataFrame, caption: str | None = None, bold: set[tuple[int, str]] = frozenset()) -> str:
    """A pipe table: labels left-aligned, metrics right-aligned; ``caption`` as a paragraph above it."""
    labels, metrics = _split_columns(df)
    cells = format_cells(df, bold)
    esc = lambda s: str(s).replace("|", r"\|")  # noqa: E731
    lines = [f"{caption}\n"] if caption else []
    lines.append("| " + " | ".join(map(esc, cells.columns)) + " |")
    lines.append("|" + "|".join(["---"] * len(labels) + ["---:"] * len(metrics)) + "|")
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    text = str(text)
    if len(text) > 4 and text.startswith("**") and text.endswith("**"):
        return rf"\textbf{{{_tex(text[2:-2])}}}"
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    return text.replace(" ± ", r" $\pm$ ").replace("–", "--")


def to_latex(df: pd.DataFrame, caption: str | None = None, label: str | None = None,
             bold: set[tuple[int, str]] = frozenset()) -> str:
    """A booktabs table; with two or more label columns, a rule separates the groups of the first one and its
    value is printed once per group (Table 3's targets)."""
    labels, metrics = _split_columns(df)
    cells = format_cells(df, bold)
    spec = "l" * len(labels) + "r" * len(metrics)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(map(_tex, cells.columns)) + r" \\", r"\midrule"]
    previous = None
    for row in cells.itertuples(index=False):
        row = list(row)
        if len(labels) > 1:
            first_of_group = row[0] != previous
            if first_of_group and previous is not None:
                lines.append(r"\midrule")
            previous = row[0]
            if not first_of_group:
                row[0] = ""
        lines.append(" & ".join(map(_tex, row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table_bundle(df: pd.DataFrame, stem: str | os.PathLike, *, caption: str | None = None,
                       label: str | None = None, bold: set[tuple[int, str]] = frozenset()) -> list[Path]:
    """Write ``stem.csv`` (the numbers), ``stem.md`` and ``stem.tex`` (formatted cells, ``bold`` ones in bold);
    returns the paths."""
    stem = Path(stem)
    _split_columns(df)  # fail before writing anything
    return [
        write_table(df, stem.with_name(stem.name + ".csv")),
        write_text(to_markdown(df, caption, bold), stem.with_name(stem.name + ".md")),
        write_text(to_latex(df, caption, label, bold), stem.with_name(stem.name + ".tex")),
    ]
