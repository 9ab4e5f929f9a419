"""One shard of candidate rewrites for (base, method): SoCD, CD or plain prompting (SPEC §3). Resumable: a
partial shard made with other settings or models is discarded."""

from hspd.io import read_table
from hspd.jobs import job_settings, rule_job
from hspd.models import check_same_tokenizer, load_causal_lm, load_tokenizer
from hspd.rewrite import rewrite_shard, select_shard

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    corpus = read_table(snakemake.input.corpus, ["id", "text"], what="ID corpus")
    texts = select_shard(corpus, int(wc.shard), p.n_shards)
    log.info("shard %s/%d: %d of %d texts; method %s, variant %s", wc.shard, p.n_shards, len(texts), len(corpus),
             wc.method, p.variant)
    tokenizer = load_tokenizer(p.base, wc.base)
    toxic_spec = {"path": snakemake.input.toxic[0]} if snakemake.input.toxic else None
    toxic_tokenizer = load_tokenizer(toxic_spec, "toxic model") if toxic_spec else None
    if toxic_tokenizer is not None:  # before any model loads
        check_same_tokenizer(tokenizer, toxic_tokenizer, wc.base, "toxic model")
    base = load_causal_lm(p.base, wc.base)
    toxic = load_causal_lm(toxic_spec, "toxic model") if toxic_spec else None
    rewrite_shard(texts, base_model=base, toxic_model=toxic, tokenizer=tokenizer, toxic_tokenizer=toxic_tokenizer,
                  method=wc.method, variant=p.variant, temperatures=p.temperatures,
                  samples_per_temperature=p.samples_per_temperature, seed=p.seed, max_new_tokens=p.max_new_tokens,
                  batch_texts=snakemake.resources.batch_texts, k_min=p.k_min, cd_alpha=p.cd_alpha, cd_beta=p.cd_beta,
                  settings=job_settings(snakemake), output_path=snakemake.output[0], progress=True)
