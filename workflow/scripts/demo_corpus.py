"""The demo world's synthetic data in the real schemas (SPEC §8)."""

from pathlib import Path

from hspd.demo.corpus import make_demo_corpus
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    p = snakemake.params
    paths = make_demo_corpus(Path(snakemake.output.dghs).parent, seed=p.seed, n_dghs=p.n_dghs,
                             n_toxigen_train=p.n_toxigen_train, n_toxigen_test=p.n_toxigen_test, n_mmlu=p.n_mmlu,
                             n_rewrite_pairs=p.n_rewrite_pairs, n_pretrain=p.n_pretrain)
    for name, path in paths.items():
        log.info("wrote %s: %s", name, path)
