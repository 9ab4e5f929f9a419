"""A demo tokenizer trained on the synthetic corpus: the byte-level BPE (``params.kind = "bpe"``, the default) or
the SentencePiece-style one (``"sentencepiece"``)."""

from pathlib import Path

from hspd.demo.tokenizer import demo_tokenizer_texts, demo_tokenizer_trainer
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    kind = snakemake.params.get("kind", "bpe")
    train = demo_tokenizer_trainer(kind)  # fails on an unknown kind before reading the corpus
    corpus = {Path(f).stem: f for f in snakemake.input.corpus}  # dghs, toxigen_train, ... as the corpus rule names them
    texts = demo_tokenizer_texts(corpus)
    log.info("training a %d-token %s tokenizer on %d texts", snakemake.params.vocab_size, kind, len(texts))
    train(texts, snakemake.output[0], vocab_size=snakemake.params.vocab_size)
