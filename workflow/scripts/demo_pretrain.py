"""Pre-train one tiny model of a real architecture on the demo web text (base models: and on rewriting
demonstrations)."""

from hspd.demo.tiny_models import demo_pretraining_texts, pretrain_demo_model
from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.models import load_tokenizer

with rule_job(snakemake) as log:
    p = snakemake.params
    pairs = read_table(snakemake.input.rewrite_pairs, ["toxic", "answer"])
    plain = read_table(snakemake.input.pretrain, ["text"])["text"].tolist()
    tokenizer = load_tokenizer({"path": snakemake.input.tokenizer}, "demo tokenizer")
    texts = demo_pretraining_texts(list(zip(pairs["toxic"], pairs["answer"])), plain, tokenizer,
                                   demonstrations=p.demonstrations)
    log.info("%s (%s, size %s): %d pretraining texts", snakemake.wildcards.name, p.arch, p.size, len(texts))
    pretrain_demo_model(p.arch, snakemake.input.tokenizer, texts, snakemake.output[0], size=p.size, steps=p.steps,
                        lr=p.lr, batch_size=p.batch_size, micro_batches=p.micro_batches, seq_len=p.seq_len,
                        seed=p.seed, progress=True, log=log.info)
