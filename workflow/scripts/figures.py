"""Fig. 2 (TP / EMT per divergence and base size) and perplexity against TP, from the aggregated metrics."""

from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.plots import plot_divergences, plot_ppl_vs_tp
from hspd.tables import grid_rows

with rule_job(snakemake) as log:
    grid = snakemake.params.ablation
    summary = read_table(snakemake.input.summary, ["target", "corpus"], what="metrics summary")
    target = grid["targets"][0]
    cells = set(grid_rows(grid, [target]))
    ablation = summary[[(t, c) in cells for t, c in zip(summary["target"], summary["corpus"])]]
    plot_divergences(ablation, snakemake.output.fig2, target=target, methods=grid["methods"], bases=grid["bases"])
    plot_ppl_vs_tp(summary, snakemake.output.ppl_tp)
    log.info("Fig. 2 for %s over %d corpora; PPL vs TP over %d models", target, len(ablation) - 1, len(summary))
