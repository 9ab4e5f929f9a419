# Fine-tuning each target on a rewritten corpus (SPEC §4). A corpus is named <method>_<base>.

FT = config["finetune"]


rule sample_finetune_set:
    input:
        corpus=corpus_file,
        target=target_files,
        lib=lib("train", "models"),
    output:
        "results/finetune_sets/{target}/{corpus}/seed{seed}.jsonl",
    params:
        target=target_spec,
        n_texts=FT["n_texts"],
        max_tokens=FT["max_tokens"],
        allow_fewer=FT["allow_fewer"],
        offline=config["offline"],
    log:
        "logs/sample_finetune_set/{target}/{corpus}/seed{seed}.log",
    threads: threads_of("sample_finetune_set")
    resources:
        **resources_of("sample_finetune_set"),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/sample_finetune_set.py"


rule finetune:
    input:
        texts="results/finetune_sets/{target}/{corpus}/seed{seed}.jsonl",
        target=target_files,
        lib=lib("train", "models"),
    output:
        directory("results/models/finetuned/{target}/{corpus}/ft{seed}"),
    params:
        target=target_spec,
        lr=FT["lr"],
        betas=FT["betas"],
        total_batch=FT["total_batch"],
        per_device_batch=FT["per_device_batch"],
        max_steps=FT["max_steps"],
        save_steps=FT["save_steps"],
        max_length=FT["max_tokens"],
        gradient_checkpointing=FT["gradient_checkpointing"],
        lora=FT["lora"],
        offline=config["offline"],
    log:
        "logs/finetune/{target}/{corpus}/ft{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{target}/{corpus}/ft{seed}.tsv"
    threads: threads_of("finetune")
    resources:
        **resources_of("finetune", target_size),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/finetune.py"
