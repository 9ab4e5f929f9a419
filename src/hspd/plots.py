"""The paper's figures from aggregated metrics (matplotlib, Agg backend: no display needed).

Each function takes a DataFrame and an output path, checks the columns it needs (a missing one is a
``DataError`` naming it) before drawing, and saves a PNG at 150 dpi.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from hspd.config import ORIGINAL
from hspd.systems import parse_hspd_system
from hspd.errors import DataError

DPI = 150
TOXICITY_PANELS = (("tp_id", "TP (ID)"), ("tp_ood", "TP (OOD)"), ("emt_id", "EMT (ID)"), ("emt_ood", "EMT (OOD)"))
# Detoxify's six dimensions, as Detoxify names them in its output.
DETOXIFY_DIMENSIONS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
RAW = "raw"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; found {list(df.columns)}")
    if df.empty:
        raise DataError(f"{what}: no rows to plot")


def _save(fig, out_path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    os.replace(tmp, out_path)  # never a half-written figure under the output name
    return out_path


def _err(values) -> list[float]:
    """Error bar half-lengths: a NaN std (one seed) draws no bar."""
    return [0.0 if v is None or math.isnan(v) else float(v) for v in values]


def _legend_below(fig, ax, title: str):
    """One legend for all panels, under them, so it never hides a bar."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(handles, labels, title=title, loc="lower center", ncol=len(labels), fontsize="small")
    return fig


def _grouped_bars(ax, table: pd.DataFrame, value: str, error: str | None, methods: list, bases: list) -> None:
    """One group of bars per method along x, one bar per base inside a group."""
    width = 0.8 / len(bases)
    for j, base in enumerate(bases):
        sub = table[table["base"] == base].set_index("method")
        xs = [i + (j - (len(bases) - 1) / 2) * width for i, m in enumerate(methods) if m in sub.index]
        present = [m for m in methods if m in sub.index]
        yerr = _err(sub.loc[present, error]) if error else None
        ax.bar(xs, sub.loc[present, value], width, yerr=yerr, capsize=2, label=str(base))
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30, ha="right")


def plot_divergences(summary: pd.DataFrame, out_path, *, target: str | None = None,
                     methods: Sequence[str] | None = None, bases: Sequence[str] | None = None) -> Path:
    """Fig. 2: TP and EMT, ID and OOD (four panels) of one target fine-tuned on each corpus.

    x = rewriting method (divergence), one bar per base model inside each group, error bars = std over seeds;
    the un-fine-tuned target (system ``original``) is a dashed line.

    Args:
        summary: ``aggregate_over_seeds`` output (``target, system, <metric>_mean, <metric>_std``).
        target: which target to draw; needed when the summary holds several.
        methods / bases: order (and selection) of methods and bases; default: order of appearance.
    """
    cols = [f"{m}_{s}" for m, _ in TOXICITY_PANELS for s in ("mean", "std")]
    _require(summary, ["target", "system", *cols], "summary")
    targets = list(dict.fromkeys(summary["target"]))
    if target is None:
        if len(targets) > 1:
            raise DataError(f"summary: holds targets {targets}; pass target= to choose the one to plot")
        target = targets[0]
    rows = summary[summary["target"] == target]
    if rows.empty:
        raise DataError(f"summary: no rows for target {target!r}; it holds {targets}")
    tuned = rows[[parse_hspd_system(s) is not None for s in rows["system"]]].copy()
    if tuned.empty:
        raise DataError(f"summary: target {target!r} has no fine-tuned HSPD systems to compare")
    tuned[["method", "base"]] = [parse_hspd_system(s) for s in tuned["system"]]
    methods = list(dict.fromkeys(tuned["method"])) if methods is None else list(methods)
    bases = list(dict.fromkeys(tuned["base"])) if bases is None else list(bases)
    original = rows[rows["system"] == ORIGINAL]

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(4 + 0.9 * len(methods) * max(1, len(bases) / 2), 7), sharex=True)
    for ax, (metric, title) in zip(axes.flat, TOXICITY_PANELS):
        _grouped_bars(ax, tuned, f"{metric}_mean", f"{metric}_std", methods, bases)
        if not original.empty:
            ax.axhline(original[f"{metric}_mean"].iloc[0], color="black", linestyle="--", linewidth=1,
                       label=f"{target} (original)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"{target} fine-tuned on rewritten corpora (mean ± std over seeds)")
    return _save(_legend_below(fig, axes[0, 0], "base model"), out_path)


def plot_direct_toxicity(table: pd.DataFrame, out_path, *, methods: Sequence[str] | None = None,
                         bases: Sequence[str] | None = None) -> Path:
    """Fig. 3: mean Detoxify score per dimension of the raw ID texts and of each rewritten corpus.

    One panel per dimension; x = method, one bar per base model; the raw texts (base and method ``raw``) are a
    dashed line.

    Args:
        table: columns ``corpus, base, method`` and the six ``DETOXIFY_DIMENSIONS``.
    """
    _require(table, ["corpus", "base", "method", *DETOXIFY_DIMENSIONS], "direct toxicity table")
    raw = table[table["method"] == RAW]
    rewritten = table[table["method"] != RAW]
    if rewritten.empty:
        raise DataError("direct toxicity table: no rewritten corpus besides the raw texts")
    methods = list(dict.fromkeys(rewritten["method"])) if methods is None else list(methods)
    bases = list(dict.fromkeys(rewritten["base"])) if bases is None else list(bases)

    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(5 + 1.1 * len(methods) * max(1, len(bases) / 2), 7), sharex=True)
    for ax, dim in zip(axes.flat, DETOXIFY_DIMENSIONS):
        _grouped_bars(ax, rewritten, dim, None, methods, bases)
        if not raw.empty:
            ax.axhline(raw[dim].iloc[0], color="black", linestyle="--", linewidth=1, label="raw texts")
        ax.set_title(dim)
        ax.set_ylim(bottom=0)
    fig.suptitle("Direct toxicity (mean Detoxify score) of the rewritten corpora")
    return _save(_legend_below(fig, axes[0, 0], "base model"), out_path)


def plot_ppl_vs_tp(summary: pd.DataFrame, out_path, *, tp: str = "tp_id") -> Path:
    """Perplexity against TP, one labelled point per (target, system), error bars (std over seeds) both ways.

    Args:
        tp: the TP column to use, ``tp_id`` or ``tp_ood``.
    """
    _require(summary, ["target", "system", "ppl_mean", "ppl_std", f"{tp}_mean", f"{tp}_std"], "summary")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for target, rows in summary.groupby("target", sort=False):
        bars = ax.errorbar(rows["ppl_mean"], rows[f"{tp}_mean"], xerr=_err(rows["ppl_std"]),
                           yerr=_err(rows[f"{tp}_std"]), fmt="o", capsize=2, label=str(target))
        for row in rows.itertuples(index=False):
            ax.annotate(row.system, (row.ppl_mean, getattr(row, f"{tp}_mean")), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=bars[0].get_color())
    ax.set_xlabel("perplexity (mean over seeds)")
    ax.set_ylabel(f"TP ({tp.split('_')[1].upper()})")
    ax.legend(title="target", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_validation_sweeps(records: Sequence[dict], out_path) -> Path:
    """The validation sweeps: TP (all domains) and PPL against fine-tuning steps, one line per (target, system),
    the chosen step circled.

    Args:
        records: selection records (``hspd.selection.selection_record``) made on validation, each with its
            ``table`` (``value, tp, ppl``) and chosen ``value``. None (every step count preset or single) draws an
            empty figure that says so.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = plt.get_cmap("tab20").colors  # more sweeps than tab10's ten colours is the usual case
    for ax in axes:
        ax.set_prop_cycle(color=colours)
    if not records:
        for ax in axes:
            ax.text(0.5, 0.5, "no validation sweep (every step count preset or single)", ha="center", va="center",
                    transform=ax.transAxes)
        return _save(fig, out_path)
    for rec in records:
        table = pd.DataFrame(rec["table"])
        _require(table, ["value", "tp", "ppl"], f"selection of {rec.get('system')}")
        table = table.sort_values("value")
        chosen = table[table["value"] == rec["value"]]
        label = f"{rec['system']} ({rec['target']})"
        for ax, col in zip(axes, ("tp", "ppl")):
            line, = ax.plot(table["value"], table[col], marker=".", label=label)
            ax.plot(chosen["value"], chosen[col], "o", markersize=11, markerfacecolor="none", color=line.get_color())
    for ax, title in zip(axes, ("validation TP (all domains)", "validation perplexity")):
        ax.set_xlabel("fine-tuning steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize="x-small")
    return _save(fig, out_path)


def plot_swept_settings(records: Sequence[dict], out_path) -> Path:
    """UniDetox's Fig. 2: validation PPL against TP for every swept value of every method (β, λ …), one panel
    per target, the chosen value circled and the PPL cap dashed.

    Args:
        records: selection records of swept systems made on validation (``table``: ``value, tp, ppl``; ``value``;
            ``ppl_cap``). None draws an empty figure that says so.
    """
    plt = _pyplot()
    targets = list(dict.fromkeys(r["target"] for r in records))
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(4.5 * max(1, len(targets)), 4.2), squeeze=False)
    if not records:
        axes[0, 0].text(0.5, 0.5, "no swept system", ha="center", va="center", transform=axes[0, 0].transAxes)
        return _save(fig, out_path)
    for ax, target in zip(axes[0], targets):
        for rec in (r for r in records if r["target"] == target):
            table = pd.DataFrame(rec["table"])
            _require(table, ["value", "tp", "ppl"], f"selection of {rec.get('system')}")
            table = table.sort_values("value")
            line, = ax.plot(table["ppl"], table["tp"], marker=".", label=rec["system"])
            for row in table.itertuples(index=False):
                ax.annotate(f"{row.value:g}", (row.ppl, row.tp), textcoords="offset points", xytext=(3, 3), fontsize=6)
            chosen = table[table["value"] == rec["value"]]
            ax.plot(chosen["ppl"], chosen["tp"], "o", markersize=11, markerfacecolor="none", color=line.get_color())
            if rec.get("ppl_cap"):
                ax.axvline(rec["ppl_cap"], color=line.get_color(), linestyle="--", linewidth=0.8)
        ax.set_title(str(target))
        ax.set_xlabel("validation perplexity")
        ax.set_ylabel("validation TP (all domains)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return _save(fig, out_path)
