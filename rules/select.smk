# Choosing each system's hyper-parameter on ToxiGen validation (SPEC §6): a fine-tuned system's step count (lowest
# TP on the choosing target), a swept system's β or λ (lowest TP under the PPL cap, per target). A selection reads
# only validation runs (results/eval/val/...), never a test file; test evaluations, and the fine-tuning of the
# targets that do not sweep, read its record.


rule select_value:
    input:
        unpack(lambda wc: S.validation_files(config, wc.target, wc.system, wc.setting)),  # toxigen, perplexity, cap
        lib=lib("selection", "systems", "metrics"),
    output:
        "results/selection/{target}/{system}/{setting}.json",
    params:
        plan=lambda wc: S.selection_plan(config, wc.target, wc.system).__dict__,
        ppl_cap_factor=config["selection"]["ppl_cap_factor"],
        seeds=config["selection"]["seeds"],
    log:
        "logs/select_value/{target}/{system}/{setting}.log",
    threads: threads_of("aggregate")
    resources:
        **resources_of("aggregate"),
    conda:
        ENV_DATA
    script:
        "../workflow/scripts/select_value.py"
