"""Conditional perplexity of each continuation given its prompt under the perplexity model (SPEC §5)."""

from hspd.evaluate import conditional_perplexity
from hspd.io import read_table, write_json
from hspd.jobs import rule_job
from hspd.metrics import mean_perplexity
from hspd.models import load_causal_lm, load_tokenizer

with rule_job(snakemake) as log:
    p = snakemake.params
    prompts = read_table(snakemake.input.prompts, ["id", "text"], what="ToxiGen prompts").set_index("id")["text"]
    gens = read_table(snakemake.input.generations, ["id", "sample", "continuation"], what="generations")
    tokenizer = load_tokenizer(p.model, p.model_name, padding_side="right")
    model = load_causal_lm(p.model, p.model_name)
    ppl = conditional_perplexity(model, tokenizer, prompts.loc[gens["id"]].tolist(), gens["continuation"].tolist(),
                                 batch_size=snakemake.resources.batch_size)
    summary = mean_perplexity(ppl, max_ppl=p.ppl_max)
    log.info("%s", summary)
    write_json({**summary, "model": p.model_name}, snakemake.output[0])
