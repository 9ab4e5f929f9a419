"""The fine-tuning set: n texts of ≤ max_tokens target tokens from a corpus, seeded (SPEC §4)."""

from hspd.io import read_table, write_table
from hspd.jobs import rule_job
from hspd.models import load_tokenizer
from hspd.train import sample_finetune_set

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    corpus = read_table(snakemake.input.corpus, ["id", "text"], what=f"corpus of {wc.system}")
    tokenizer = load_tokenizer(p.target, wc.target)
    texts = sample_finetune_set(corpus, tokenizer, n=p.n_texts, max_tokens=p.max_tokens, seed=int(wc.seed),
                                allow_fewer=p.allow_fewer, name=wc.system)
    log.info("%d texts for %s (%d in the corpus)", len(texts), wc.system, len(corpus))
    write_table(texts, snakemake.output[0])
