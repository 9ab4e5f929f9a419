"""DGHS → the in-distribution toxic corpus (SPEC §2)."""

from hspd.data import load_dataset_source, split_dghs
from hspd.io import write_json, write_table
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    p = snakemake.params
    raw = load_dataset_source(p.source, what="DGHS")
    corpus, steps = split_dghs(raw, targets=p.targets, splits=p.splits, label=p.label, source_name=str(p.source))
    for step in steps:
        log.info("%-12s %6d rows", step["step"], step["rows"])
    write_table(corpus, snakemake.output.corpus)
    write_json({"source": dict(p.source), "steps": steps, "rows": len(corpus)}, snakemake.output.report)
