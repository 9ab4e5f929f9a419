"""Fig. 2 (TP / EMT per divergence and base size), perplexity against TP, the step-count sweeps (TP and PPL
against fine-tuning steps, the chosen step marked) and UniDetox's Fig. 2 (validation PPL against TP for every swept
β / λ, the chosen value marked)."""

from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.plots import plot_divergences, plot_ppl_vs_tp, plot_swept_settings, plot_validation_sweeps
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
    records = [r for r in map(read_selection, snakemake.input.selections)
               if r["how"] == "validation" and r["chosen_on"] == r["target"]]
    steps = [r for r in records if r.get("ppl_cap") is None]
    swept = [r for r in records if r.get("ppl_cap") is not None]
    plot_validation_sweeps(steps, snakemake.output.sweep)
    plot_swept_settings(swept, snakemake.output.swept)
    log.info("Fig. 2 for %s over %d systems; PPL vs TP over %d models; %d step sweeps, %d value sweeps", target,
             len(ablation) - 1, len(summary), len(steps), len(swept))
