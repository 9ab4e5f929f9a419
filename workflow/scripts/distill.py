"""One shard of UniDetox's distilled text (or of plain GPT-2 samples) from the EOS prompt (SPEC §6). Resumable: a
partial shard made with other settings or models is discarded."""

from hspd.baselines import distill_shard
from hspd.jobs import job_settings, rule_job
from hspd.models import check_same_tokenizer, load_causal_lm, load_tokenizer

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    tokenizer = load_tokenizer(p.base, p.base_name)
    toxic_spec = {"path": snakemake.input.toxic[0]} if snakemake.input.toxic else None
    toxic_tokenizer = load_tokenizer(toxic_spec, f"toxic {p.base_name}") if toxic_spec else None
    if toxic_tokenizer is not None:  # before any model loads
        check_same_tokenizer(tokenizer, toxic_tokenizer, p.base_name, f"toxic {p.base_name}")
    base = load_causal_lm(p.base, p.base_name)
    toxic = load_causal_lm(toxic_spec, f"toxic {p.base_name}") if toxic_spec else None
    distill_shard(base_model=base, toxic_model=toxic, tokenizer=tokenizer, toxic_tokenizer=toxic_tokenizer,
                  alpha=p.alpha, n_texts=p.n_texts, shard=int(wc.shard), n_shards=p.n_shards,
                  max_new_tokens=p.max_new_tokens, batch_texts=snakemake.resources.batch_texts, seed=p.seed,
                  source=wc.source,
                  settings=job_settings(snakemake), output_path=snakemake.output[0], progress=True)
