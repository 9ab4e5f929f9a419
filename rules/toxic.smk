# The small toxic model (SPEC §4): full fine-tuning of `toxic_model.init` on the raw ID texts.

TOXIC = config["toxic_model"]


rule train_toxic:
    input:
        corpus="results/data/dghs_id.jsonl",
        init=model_files(TOXIC["init"]),
        lib=lib("train", "models"),
    output:
        directory("results/models/toxic"),
    params:
        init=config["models"][TOXIC["init"]],
        init_name=TOXIC["init"],
        lr=TOXIC["lr"],
        batch_size=TOXIC["batch_size"],
        epochs=TOXIC["epochs"],
        max_length=TOXIC["max_length"],
        heldout_fraction=TOXIC["heldout_fraction"],
        eval_every=TOXIC["eval_every"],
        seed=TOXIC["seed"],
        offline=config["offline"],
    log:
        "logs/train_toxic.log",
    benchmark:
        "results/benchmarks/train_toxic.tsv"
    threads: threads_of("train_toxic")
    resources:
        **resources_of("train_toxic"),
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/train_toxic.py"
