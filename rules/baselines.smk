# The baselines' own models and text (SPEC §6): toxic versions (UniDetox's GPT2-XL; each target's, for DExperts
# and Task Arithmetic), then 640 texts sampled from the EOS prompt, contrastively (UniDetox, per α) or plainly
# (GPT-2 samples), in resumable shards.


rule train_toxic_lm:
    input:
        corpus="results/data/dghs_id.jsonl",
        init=lambda wc: model_files(wc.model),
        lib=lib("train", "models"),
    output:
        directory("results/models/toxic_lm/{recipe}/{model}"),
    params:
        init=lambda wc: config["models"][wc.model],
        recipe=lambda wc: TOXIC_RECIPES[wc.recipe],
        offline=config["offline"],
    log:
        "logs/train_toxic_lm/{recipe}/{model}.log",
    benchmark:
        "results/benchmarks/train_toxic_lm/{recipe}/{model}.tsv"
    threads: threads_of("train_toxic_lm")
    resources:
        **resources_of("train_toxic_lm", model_size),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/train_toxic_lm.py"


rule distill:
    input:
        base=model_files(UNI["model"]),
        toxic=distill_toxic,
        lib=lib("baselines", "decoding", "socd", "models"),
    output:
        "results/distilled/{source}/shard{shard}.jsonl",
    params:
        base=config["models"][UNI["model"]],
        base_name=UNI["model"],
        alpha=lambda wc: DISTILLED[wc.source],
        n_texts=UNI["n_texts"],
        max_new_tokens=UNI["max_new_tokens"],
        n_shards=UNI["shards"],
        seed=UNI["seed"],
        offline=config["offline"],
    log:
        "logs/distill/{source}/shard{shard}.log",
    benchmark:
        "results/benchmarks/distill/{source}/shard{shard}.tsv"
    threads: threads_of("distill")
    resources:
        **resources_of("distill"),
        batch_texts=UNI["batch_texts"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/distill.py"


rule distilled_corpus:
    input:
        shards=expand("results/distilled/{{source}}/shard{shard}.jsonl", shard=range(UNI["shards"])),
        lib=lib("baselines"),
    output:
        corpus="results/distilled/{source}.jsonl",
        report="results/distilled/{source}.report.json",
    params:
        n_texts=UNI["n_texts"],
    log:
        "logs/distilled_corpus/{source}.log",
    threads: threads_of("aggregate")
    resources:
        **resources_of("aggregate"),
    conda:
        ENV_DATA
    script:
        "../workflow/scripts/distilled_corpus.py"


# What LM-Steer and DetoxiGen learn per target, every weight of the target frozen: a steering matrix on its output
# embeddings, a soft prompt that turns it into the detoxifier. Both on the toxic (DGHS ID) texts.
rule train_treatment:
    input:
        corpus="results/data/dghs_id.jsonl",
        init=lambda wc: model_files(wc.model),
        lib=lib("baselines", "train", "models"),
    output:
        directory("results/models/{part}/{model}"),
    params:
        init=lambda wc: config["models"][wc.model],
        recipe=lambda wc: TREATMENT_RECIPES[wc.part],
        offline=config["offline"],
    log:
        "logs/train_treatment/{part}/{model}.log",
    benchmark:
        "results/benchmarks/train_treatment/{part}/{model}.tsv"
    threads: threads_of("train_treatment")
    resources:
        **resources_of("train_treatment"),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/train_treatment.py"
