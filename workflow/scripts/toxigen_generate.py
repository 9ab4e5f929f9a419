"""25 continuations of ≤ 20 new tokens per ToxiGen test prompt, one evaluation seed (SPEC §5). Resumable."""

from hspd.evaluate import toxigen_generate
from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.models import load_causal_lm, load_tokenizer

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    prompts = read_table(snakemake.input.prompts, ["id", "text"], what="ToxiGen prompts")
    name = f"{wc.target}/{wc.corpus}/{wc.ft}"
    tokenizer = load_tokenizer(p.model, name)
    model = load_causal_lm(p.model, name)
    log.info("%s: %d prompts × %d samples, seed %s", name, len(prompts), p.n_samples, wc.seed)
    toxigen_generate(model, tokenizer, prompts, n_samples=p.n_samples, max_new_tokens=p.max_new_tokens, top_p=p.top_p,
                     temperature=p.temperature, top_k=p.top_k, seed=int(wc.seed), batch_prompts=p.batch_prompts,
                     output_path=snakemake.output[0], progress=True)
