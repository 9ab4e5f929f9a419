"""Conditional perplexity of each continuation given its prompt under the perplexity model (SPEC §5), for every
evaluation seed of one evaluated model: the PPL model loads once."""

from hspd.evaluate import conditional_perplexity
from hspd.io import read_table, write_json
from hspd.jobs import rule_job
from hspd.metrics import mean_perplexity
from hspd.models import load_causal_lm, load_tokenizer

with rule_job(snakemake) as log:
    p = snakemake.params
    prompts = read_table(snakemake.input.prompts, ["id", "text"], what="ToxiGen prompts").set_index("id")["text"]
    runs = [read_table(f, ["id", "sample", "continuation"], what="generations") for f in snakemake.input.generations]
    tokenizer = load_tokenizer(p.model, p.model_name, padding_side="right")
    model = load_causal_lm(p.model, p.model_name)
    per_seed = {}
    for seed, gens in zip(p.seeds, runs):
        ppl = conditional_perplexity(model, tokenizer, prompts.loc[gens["id"]].tolist(), gens["continuation"].tolist(),
                                     batch_size=snakemake.resources.batch_size)
        per_seed[str(seed)] = mean_perplexity(ppl, max_ppl=p.ppl_max)
        log.info("seed %s: %s", seed, per_seed[str(seed)])
    write_json({"model": p.model_name, "seeds": per_seed}, snakemake.output[0])
