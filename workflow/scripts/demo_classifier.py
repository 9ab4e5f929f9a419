"""The demo's toxicity classifier, saved as a Detoxify-format checkpoint."""

from pathlib import Path

from hspd.demo.classifier import train_demo_classifier
from hspd.jobs import rule_job

with rule_job(snakemake) as log:
    path = train_demo_classifier(snakemake.input.train, Path(snakemake.output.checkpoint).parent,
                                 seed=snakemake.params.seed)
    log.info("checkpoint: %s", path)
