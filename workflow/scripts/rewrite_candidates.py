"""One shard of candidate rewrites for (base, method): SoCD, CD or plain prompting (SPEC §3). Resumable."""

from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.models import load_causal_lm, load_tokenizer
from hspd.rewrite import rewrite_shard, select_shard

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    corpus = read_table(snakemake.input.corpus, ["id", "text"], what="ID corpus")
    texts = select_shard(corpus, int(wc.shard), p.n_shards)
    log.info("shard %s/%d: %d of %d texts; method %s, variant %s", wc.shard, p.n_shards, len(texts), len(corpus),
             wc.method, p.variant)
    tokenizer = load_tokenizer(p.base, wc.base)
    base = load_causal_lm(p.base, wc.base)
    toxic = load_causal_lm({"path": snakemake.input.toxic[0]}, "toxic model") if snakemake.input.toxic else None
    rewrite_shard(texts, base_model=base, toxic_model=toxic, tokenizer=tokenizer, method=wc.method, variant=p.variant,
                  temperatures=p.temperatures, samples_per_temperature=p.samples_per_temperature, seed=p.seed,
                  max_new_tokens=p.max_new_tokens, batch_texts=p.batch_texts, k_min=p.k_min, cd_alpha=p.cd_alpha,
                  cd_beta=p.cd_beta, output_path=snakemake.output[0], progress=True)
