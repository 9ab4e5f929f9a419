"""MMLU accuracy through lm-eval: the built-in task, or a local MMLU-format task (SPEC §2, §5)."""

from hspd.evaluate import run_mmlu
from hspd.io import write_json
from hspd.jobs import rule_job
from hspd.models import load_causal_lm, load_tokenizer
from hspd.selection import checkpoint_spec

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    name = f"{wc.target}/{wc.system}/{wc.setting}"
    spec = checkpoint_spec(p.model, snakemake.input.selection)  # the chosen step of a fine-tuned system
    tokenizer = load_tokenizer(spec, name)
    model = load_causal_lm(spec, name)
    result = run_mmlu(model, tokenizer, task_spec=dict(p.task), num_fewshot=p.num_fewshot, batch_size=p.batch_size,
                      limit=p.limit)
    log.info("%s: %s", name, result)
    write_json(result, snakemake.output[0])
