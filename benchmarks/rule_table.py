"""Where a finished run spent its time: per rule, the jobs, mean and total seconds and peak memory, from the
``benchmark:`` files the rules write (``results/benchmarks/<rule>/…tsv`` or ``results/benchmarks/<rule>.tsv``).

Run after ``make demo`` (or any run): ``python benchmarks/rule_table.py [RESULTS_DIR]``. It prints a Markdown
table, heaviest rule first; the rules without a ``benchmark:`` (the cheap bookkeeping ones) are not in it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def rule_table(benchmarks_dir: str | Path):
    """``DataFrame`` indexed by rule: ``jobs``, ``mean_s``, ``total_s``, ``peak_mb`` (largest ``max_rss``),
    sorted by ``total_s`` descending; one row per rule, from every ``*.tsv`` under ``benchmarks_dir``."""
    import pandas as pd

    root = Path(benchmarks_dir)
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"{root}: no benchmark files (run the workflow first)")
    rows = []
    for path in files:
        rel = path.relative_to(root)
        bench = pd.read_csv(path, sep="\t")
        for column in ("s", "max_rss"):
            if column not in bench.columns:
                raise SystemExit(f"{path}: not a Snakemake benchmark file (no {column!r} column)")
        # A file holds one row per repeat (`benchmark: repeat(...)`): each counts as a job's run.
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        rows += [{"rule": rule, "s": s, "rss": rss} for s, rss in zip(bench["s"], bench["max_rss"])]
    runs = pd.DataFrame(rows)
    table = runs.groupby("rule").agg(jobs=("s", "size"), mean_s=("s", "mean"), total_s=("s", "sum"),
                                     peak_mb=("rss", "max"))
    return table.sort_values("total_s", ascending=False)


def markdown(table) -> str:
    lines = ["| rule | jobs | mean s | total s | peak MB |", "|---|---:|---:|---:|---:|"]
    for rule, r in table.iterrows():
        lines.append(f"| {rule} | {int(r.jobs)} | {r.mean_s:.1f} | {r.total_s:.0f} | {r.peak_mb:.0f} |")
    lines.append(f"| all | {table.jobs.sum()} | | {table.total_s.sum():.0f} | {table.peak_mb.max():.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    results = Path(argv[0]) if argv else Path("results")
    print(markdown(rule_table(results / "benchmarks")))


if __name__ == "__main__":
    main()
