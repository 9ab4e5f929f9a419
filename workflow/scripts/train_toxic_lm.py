"""UniDetox's toxic model: full fine-tuning of its base on the DGHS ID texts of the configured splits (SPEC §6)."""

from hspd.errors import DataError
from hspd.io import read_table, write_json
from hspd.jobs import environment, rule_job
from hspd.models import load_causal_lm, load_tokenizer, provenance
from hspd.train import train_toxic_model

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    corpus = read_table(snakemake.input.corpus, ["id", "text", "split"], what="ID corpus")
    texts = corpus.loc[corpus["split"].isin(p.splits), "text"].tolist()
    if not texts:
        raise DataError(f"{snakemake.input.corpus}: no text of split(s) {p.splits} (found {sorted(set(corpus['split']))})")
    tokenizer = load_tokenizer(p.init, wc.model, padding_side="right")
    model = load_causal_lm(p.init, wc.model, dtype="float32")
    log.info("toxic %s: %d ID texts of splits %s", wc.model, len(texts), p.splits)
    train_toxic_model(model, tokenizer, texts, lr=p.lr, batch_size=p.batch_size, epochs=p.epochs,
                      max_length=p.max_length, heldout_fraction=None, eval_every=None, seed=p.seed,
                      output_dir=snakemake.output[0], progress=True, log=log.info)
    write_json({"init": provenance(p.init, wc.model, model), "splits": list(p.splits), "environment": environment()},
               f"{snakemake.output[0]}/provenance.json")
