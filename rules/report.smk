# The papers' tables and figures from the aggregated metrics and the validation sweeps.


rule tables:
    input:
        summary="results/metrics/summary.csv",
        lib=lib("tables", "systems"),
    output:
        table1=report("results/tables/table1.md", caption="../workflow/report/table1.rst", category="Tables"),
        table3=report("results/tables/table3.md", caption="../workflow/report/table3.rst", category="Tables"),
        unidetox=report("results/tables/unidetox.md", caption="../workflow/report/unidetox.rst", category="Tables"),
        other=multiext("results/tables/table1", ".csv", ".tex")
        + multiext("results/tables/table3", ".csv", ".tex")
        + multiext("results/tables/unidetox", ".csv", ".tex"),
    params:
        rows=table_params(),
    log:
        "logs/tables.log",
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    conda:
        ENV_REPORT
    script:
        "../workflow/scripts/tables.py"


rule figures:
    input:
        summary="results/metrics/summary.csv",
        selections=selection_files(),
        lib=lib("plots", "tables", "systems", "selection"),
    output:
        fig2=report("results/figures/fig2_divergences.png", caption="../workflow/report/fig2.rst", category="Figures"),
        ppl_tp=report("results/figures/ppl_vs_tp.png", caption="../workflow/report/ppl_vs_tp.rst", category="Figures"),
        sweep=report(
            "results/figures/validation_sweep.png", caption="../workflow/report/validation_sweep.rst", category="Figures"
        ),
        swept=report(
            "results/figures/validation_ppl_tp.png", caption="../workflow/report/validation_ppl_tp.rst", category="Figures"
        ),
    params:
        ablation=ABLATION,
        ablation_systems=[s.name for s in S.grid_systems(config, ABLATION)] if ABLATION else [],
    log:
        "logs/figures.log",
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    conda:
        ENV_REPORT
    script:
        "../workflow/scripts/figures.py"
