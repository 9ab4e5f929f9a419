"""MMLU accuracy through lm-eval: the built-in task, or a local MMLU-format task (SPEC §2, §5)."""

from hspd.evaluate import run_mmlu
from hspd.io import write_json
from hspd.jobs import rule_job
from hspd.models import load_causal_lm, load_tokenizer

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    name = f"{wc.target}/{wc.corpus}/{wc.ft}"
    tokenizer = load_tokenizer(p.model, name)
    model = load_causal_lm(p.model, name)
    result = run_mmlu(model, tokenizer, task_spec=dict(p.task), num_fewshot=p.num_fewshot, batch_size=p.batch_size,
                      limit=p.limit)
    log.info("%s: %s", name, result)
    write_json(result, snakemake.output[0])
