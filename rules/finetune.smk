# Fine-tuning each target for every corpus system (SPEC §4, §6): HSPD's rewritten corpora and the raw control
# (a seeded fine-tuning set first), UniDetox's distilled text and GPT-2 samples (used whole).
# The choosing target (`selection.target`) saves every candidate step for the validation sweep; every other
# target trains to the step its selection file names.

FT = config["finetune"]


rule sample_finetune_set:
    input:
        corpus=lambda wc: system_of(wc).texts,
        target=target_files,
        lib=lib("train", "models", "systems"),
    output:
        "results/finetune_sets/{target}/{system}/seed{seed}.jsonl",
    params:
        target=target_spec,
        n_texts=FT["n_texts"],
        max_tokens=FT["max_tokens"],
        allow_fewer=FT["allow_fewer"],
        offline=config["offline"],
    log:
        "logs/sample_finetune_set/{target}/{system}/seed{seed}.log",
    threads: threads_of("sample_finetune_set")
    resources:
        **resources_of("sample_finetune_set"),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/sample_finetune_set.py"


rule finetune:
    input:
        texts=finetune_texts,
        target=target_files,
        selection=selection_input,
        lib=lib("train", "models", "systems", "selection"),
    output:
        directory("results/models/finetuned/{target}/{system}/ft{seed}"),
    params:
        target=target_spec,
        recipe=lambda wc: dict(system_of(wc).recipe),
        betas=FT["betas"],
        gradient_checkpointing=FT["gradient_checkpointing"],
        save_dtype=FT["save_dtype"],
        lora=FT["lora"],
        offline=config["offline"],
    log:
        "logs/finetune/{target}/{system}/ft{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{target}/{system}/ft{seed}.tsv"
    threads: threads_of("finetune")
    resources:
        **resources_of("finetune", target_size),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/finetune.py"
