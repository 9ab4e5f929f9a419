"""ToxiGen annotated → test prompts and a seeded validation split, tagged by category (SPEC §2)."""

from hspd.data import load_dataset_source, split_toxigen
from hspd.io import write_json, write_table
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    p = snakemake.params
    train = load_dataset_source(p.train_source, what="ToxiGen train")
    test = load_dataset_source(p.test_source, what="ToxiGen test")
    test_df, val_df, report = split_toxigen(train, test, val_fraction=p.val_fraction, seed=p.seed)
    log.info("test %d prompts, validation %d prompts; report %s", len(test_df), len(val_df), report)
    write_table(test_df, snakemake.output.test)
    write_table(val_df, snakemake.output.val)
    write_json({"train_source": dict(p.train_source), "test_source": dict(p.test_source), **report},
               snakemake.output.report)
