"""Direct toxicity (Fig. 3): mean Detoxify score per dimension of the raw ID texts and of each corpus."""

from hspd.io import read_table, write_table
from hspd.jobs import rule_job
from hspd.plots import plot_direct_toxicity
from hspd.scoring import ToxicityScorer, direct_toxicity

with rule_job(snakemake) as log:
    p = snakemake.params
    corpora = {"raw": read_table(snakemake.input.raw, ["text"])}
    for spec, path in zip(p.corpora, snakemake.input.corpora):
        corpora[f"{spec['method']}_{spec['base']}"] = read_table(path, ["text"])
    table = direct_toxicity(corpora, ToxicityScorer(p.scorer), batch_size=snakemake.resources.batch_size)
    bases = {"raw": "raw", **{f"{s['method']}_{s['base']}": s["base"] for s in p.corpora}}
    methods = {"raw": "raw", **{f"{s['method']}_{s['base']}": s["method"] for s in p.corpora}}
    table.insert(1, "base", table["corpus"].map(bases))
    table.insert(2, "method", table["corpus"].map(methods))
    log.info("\n%s", table.to_string(index=False))
    write_table(table, snakemake.output.table)
    plot_direct_toxicity(table, snakemake.output.figure)
