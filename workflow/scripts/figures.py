"""Fig. 2 (TP / EMT per divergence and base size), perplexity against TP, and the validation sweeps (TP and PPL
against fine-tuning steps, the chosen step marked)."""

from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.plots import plot_divergences, plot_ppl_vs_tp, plot_validation_sweeps
from hspd.selection import read_selection

with rule_job(snakemake) as log:
    p = snakemake.params
    summary = read_table(snakemake.input.summary, ["target", "system"], what="metrics summary")
    target = p.ablation["targets"][0]
    keep = {"original", *p.ablation_systems}
    ablation = summary[(summary["target"] == target) & summary["system"].isin(keep)]
    plot_divergences(ablation, snakemake.output.fig2, target=target, methods=p.ablation["methods"],
                     bases=p.ablation["bases"])
    plot_ppl_vs_tp(summary, snakemake.output.ppl_tp)
    sweeps = [r for r in map(read_selection, snakemake.input.selections)
              if r["how"] == "validation" and r["chosen_on"] == r["target"]]
    plot_validation_sweeps(sweeps, snakemake.output.sweep)
    log.info("Fig. 2 for %s over %d systems; PPL vs TP over %d models; %d validation sweeps", target,
             len(ablation) - 1, len(summary), len(sweeps))
