# Choosing each fine-tuned system's step count on ToxiGen validation (SPEC §6). A selection reads only
# validation runs (results/eval/val/...), never a test file; test evaluations and the fine-tuning of the targets
# that do not sweep read its record.


rule select_steps:
    input:
        toxigen=lambda wc: S.validation_files(config, wc.target, wc.system, wc.setting)["toxigen"],
        perplexity=lambda wc: S.validation_files(config, wc.target, wc.system, wc.setting)["perplexity"],
        lib=lib("selection", "systems"),
    output:
        "results/selection/{target}/{system}/{setting}.json",
    params:
        plan=lambda wc: S.selection_plan(config, wc.target, wc.system).__dict__,
    log:
        "logs/select_steps/{target}/{system}/{setting}.log",
    threads: threads_of("aggregate")
    resources:
        **resources_of("aggregate"),
    conda:
        ENV_DATA
    script:
        "../workflow/scripts/select_steps.py"
