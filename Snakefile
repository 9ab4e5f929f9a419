# HSPD: "Detoxification for LLM: From Dataset Itself", end to end.
#   snakemake --profile slurm     the paper's experiment on a GPU SLURM cluster (config.yaml)
#   snakemake --profile demo      the demo world, offline on CPU (config.yaml + demo/demo.yaml)
# The rules only wire stages together; the work is done by the library in src/hspd/.

import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The library is imported from the checkout, here and (through PYTHONPATH) in every job's script.
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
# (Set, never required: `update` keeps `snakemake --lint` from asking for an `envvars:` assertion.)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))

import hspd.config
import hspd.models


configfile: "config.yaml"


# Unknown keys, wrong types and dangling names stop the run here, before any job, naming the key path.
hspd.config.validate(config)
if config["offline"]:
    hspd.models.set_offline(True)


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/data.smk"
include: "rules/toxic.smk"
include: "rules/rewrite.smk"
include: "rules/baselines.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/select.smk"
include: "rules/report.smk"


# Bookkeeping that takes seconds runs on the submitting host, never in the cluster's queue.
localrules:
    select_value,
    distilled_corpus,


rule all:
    input:
        final_outputs(),
    default_target: True
