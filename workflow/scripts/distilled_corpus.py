"""The distilled corpus from its shards, with a report of how the samples ended (SPEC §6)."""

from hspd.baselines import merge_distilled
from hspd.io import read_table, write_json, write_table
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    wc = snakemake.wildcards
    shards = [read_table(f, what=f"{wc.source} shard") for f in snakemake.input.shards]
    corpus, report = merge_distilled(shards, n_texts=snakemake.params.n_texts, source=wc.source)
    log.info("%s", report)
    write_table(corpus, snakemake.output.corpus)
    write_json(report, snakemake.output.report)
