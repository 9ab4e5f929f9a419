"""Every metric per run (target, corpus, fine-tuning seed, evaluation seed), then mean ± std over seeds (SPEC §5)."""

from hspd.io import read_json, write_table
from hspd.jobs import rule_job
from hspd.metrics import aggregate_runs

with rule_job(snakemake) as log:
    p, i = snakemake.params, snakemake.input
    runs, summary = aggregate_runs(p.models, p.seeds, toxigen=[read_json(f) for f in i.toxigen],
                                   perplexity=[read_json(f) for f in i.perplexity],
                                   diversity=[read_json(f) for f in i.diversity], mmlu=[read_json(f) for f in i.mmlu])
    log.info("%d runs of %d models\n%s", len(runs), len(p.models), summary.to_string(index=False))
    write_table(runs, snakemake.output.runs)
    write_table(summary, snakemake.output.summary)
