"""MMLU accuracy through lm-eval: the built-in task, or a local MMLU-format task (SPEC §2, §5)."""

from hspd.evaluate import run_mmlu
from hspd.io import write_json
from hspd.jobs import rule_job
from hspd.treatments import load_treated

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    name = f"{wc.target}/{wc.system}/{wc.setting}"
    # A two-model system is scored on its combined distribution; a pre-prompt goes in front of every question.
    system = load_treated(p.model, p.treatment, name=name, selection=snakemake.input.selection,
                          trained=snakemake.input.trained)
    result = run_mmlu(system.model, system.tokenizer, task_spec=dict(p.task), num_fewshot=p.num_fewshot,
                      batch_size=snakemake.resources.batch_size, limit=p.limit, combine=system.combine,
                      system_instruction=system.prefix.rstrip("\n") or None)
    log.info("%s: %s", name, result)
    write_json(result, snakemake.output[0])
