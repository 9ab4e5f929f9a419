"""Every metric per run (target, system, fine-tuning seed, evaluation seed) with the value it was evaluated at
(the chosen step count, β or λ), then mean ± std over seeds (SPEC §5)."""

from hspd.io import read_json, write_table
from hspd.jobs import rule_job
from hspd.metrics import aggregate_runs, read_perplexities
from hspd.selection import read_selection
from hspd.systems import selection_path

with rule_job(snakemake) as log:
    p, i = snakemake.params, snakemake.input
    chosen = {path: read_selection(path)["value"] for path in i.selections}
    models = [{**m, "chosen": chosen.get(selection_path(m["target"], m["system"], m["ft"]))} for m in p.models]
    ppl = read_perplexities(i.perplexity, p.seeds)  # models × seeds
    runs, summary = aggregate_runs(models, p.seeds, toxigen=[read_json(f) for f in i.toxigen], perplexity=ppl,
                                   diversity=[read_json(f) for f in i.diversity], mmlu=[read_json(f) for f in i.mmlu])
    log.info("%d runs of %d models\n%s", len(runs), len(p.models), summary.to_string(index=False))
    write_table(runs, snakemake.output.runs)
    write_table(summary, snakemake.output.summary)
