# The paper's tables and figures from the aggregated metrics.


rule tables:
    input:
        summary="results/metrics/summary.csv",
        lib=lib("tables"),
    output:
        table1=report("results/tables/table1.md", caption="../workflow/report/table1.rst", category="Tables"),
        table3=report("results/tables/table3.md", caption="../workflow/report/table3.rst", category="Tables"),
        other=multiext("results/tables/table1", ".csv", ".tex") + multiext("results/tables/table3", ".csv", ".tex"),
    params:
        main=config["experiment"].get("main"),
        ablation=config["experiment"].get("ablation"),
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
        lib=lib("plots"),
    output:
        fig2=report("results/figures/fig2_divergences.png", caption="../workflow/report/fig2.rst", category="Figures"),
        ppl_tp=report("results/figures/ppl_vs_tp.png", caption="../workflow/report/ppl_vs_tp.rst", category="Figures"),
    params:
        ablation=config["experiment"].get("ablation"),
    log:
        "logs/figures.log",
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    conda:
        ENV_REPORT
    script:
        "../workflow/scripts/figures.py"
