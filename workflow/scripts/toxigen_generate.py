"""25 continuations of ≤ 20 new tokens per ToxiGen prompt (test or validation), one evaluation seed (SPEC §5). Resumable."""

from hspd.evaluate import toxigen_generate
from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.models import load_causal_lm, load_tokenizer
from hspd.selection import checkpoint_spec

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    prompts = read_table(snakemake.input.prompts, ["id", "text"], what="ToxiGen prompts")
    name = f"{wc.target}/{wc.system}/{wc.setting}"
    spec = checkpoint_spec(p.model, snakemake.input.selection)  # the chosen step of a fine-tuned system
    tokenizer = load_tokenizer(spec, name)
    model = load_causal_lm(spec, name)
    log.info("%s: %d prompts × %d samples, seed %s", name, len(prompts), p.n_samples, wc.seed)
    toxigen_generate(model, tokenizer, prompts, n_samples=p.n_samples, max_new_tokens=p.max_new_tokens, top_p=p.top_p,
                     temperature=p.temperature, top_k=p.top_k, seed=int(wc.seed), batch_prompts=p.batch_prompts,
                     output_path=snakemake.output[0], progress=True)
