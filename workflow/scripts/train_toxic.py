"""The small toxic model: continued pre-training on the raw ID texts, best held-out checkpoint (SPEC §4)."""

from hspd.io import read_table, write_json
from hspd.jobs import environment, rule_job
from hspd.models import load_causal_lm, load_tokenizer, provenance
from hspd.train import train_toxic_model

with rule_job(snakemake) as log:
    p = snakemake.params
    texts = read_table(snakemake.input.corpus, ["id", "text"], what="ID corpus")["text"].tolist()
    tokenizer = load_tokenizer(p.init, p.init_name, padding_side="right")
    model = load_causal_lm(p.init, p.init_name)
    log.info("training %s on %d texts", p.init_name, len(texts))
    result = train_toxic_model(model, tokenizer, texts, lr=p.lr, batch_size=p.batch_size, epochs=p.epochs,
                               max_length=p.max_length, heldout_fraction=p.heldout_fraction, eval_every=p.eval_every,
                               seed=p.seed, output_dir=snakemake.output[0], progress=True, log=log.info)
    write_json({"init": provenance(p.init, p.init_name, model), "environment": environment()},
               f"{snakemake.output[0]}/provenance.json")
