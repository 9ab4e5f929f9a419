"""The demo's shared byte-level BPE tokenizer, trained on the synthetic corpus."""

from pathlib import Path

from hspd.demo.tokenizer import demo_tokenizer_texts, train_demo_tokenizer
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    corpus = {Path(f).stem: f for f in snakemake.input.corpus}  # dghs, toxigen_train, ... as the corpus rule names them
    texts = demo_tokenizer_texts(corpus)
    log.info("training a %d-token BPE on %d texts", snakemake.params.vocab_size, len(texts))
    train_demo_tokenizer(texts, snakemake.output[0], vocab_size=snakemake.params.vocab_size)
