"""A toxic version of a model: full fine-tuning on the DGHS ID texts (SPEC §6). UniDetox's recipe trains on the
`train` split for its epochs and keeps the last weights; the toxic-target recipe (DExperts, Task Arithmetic) keeps
the best held-out checkpoint, as SoCD's toxic model (SPEC §4)."""

from hspd.errors import DataError
from hspd.io import read_table, write_json
from hspd.jobs import environment, rule_job
from hspd.models import load_causal_lm, load_tokenizer, provenance
from hspd.train import train_toxic_model

with rule_job(snakemake) as log:
    p, wc, r = snakemake.params, snakemake.wildcards, snakemake.params.recipe
    corpus = read_table(snakemake.input.corpus, ["id", "text", "split"], what="ID corpus")
    if r["splits"] is not None:
        corpus = corpus[corpus["split"].isin(r["splits"])]
    texts = corpus["text"].tolist()
    if not texts:
        raise DataError(f"{snakemake.input.corpus}: no text of split(s) {r['splits']}")
    tokenizer = load_tokenizer(p.init, wc.model, padding_side="right")
    model = load_causal_lm(p.init, wc.model, dtype="float32")
    log.info("toxic %s (%s recipe): %d ID texts", wc.model, wc.recipe, len(texts))
    train_toxic_model(model, tokenizer, texts, lr=r["lr"], batch_size=r["batch_size"], epochs=r["epochs"],
                      max_length=r["max_length"], heldout_fraction=r["heldout_fraction"], eval_every=r["eval_every"],
                      seed=r["seed"], output_dir=snakemake.output[0], progress=True, log=log.info)
    write_json({"init": provenance(p.init, wc.model, model), "recipe": wc.recipe, "environment": environment()},
               f"{snakemake.output[0]}/provenance.json")
