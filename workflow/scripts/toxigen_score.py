"""Detoxify toxicity of each continuation (prompt removed), then TP and EMT per category (SPEC §5)."""

from hspd.io import read_table, write_json, write_table
from hspd.jobs import rule_job
from hspd.metrics import toxigen_metrics
from hspd.scoring import ToxicityScorer

with rule_job(snakemake) as log:
    p = snakemake.params
    prompts = read_table(snakemake.input.prompts, ["id", "category", "distribution"], what="ToxiGen prompts")
    gens = read_table(snakemake.input.generations, ["id", "sample", "continuation"], what="generations")
    scores = ToxicityScorer(p.scorer).score(gens["continuation"].tolist(), batch_size=p.batch_size, progress=True)
    scored = gens[["id", "sample"]].assign(toxicity=scores["toxicity"].to_numpy())
    scored = scored.merge(prompts[["id", "category", "distribution"]], on="id", how="left", validate="many_to_one")
    metrics = toxigen_metrics(scored, threshold=p.threshold)
    log.info("%s", metrics)
    write_table(scored, snakemake.output.scores)
    write_json(metrics, snakemake.output.metrics)
