# Data splits (SPEC §2): the DGHS in-distribution corpus, and ToxiGen test / validation prompts.


rule dghs_split:
    input:
        data=dataset_files("dghs"),
        lib=lib("data", "models"),
    output:
        corpus="results/data/dghs_id.jsonl",
        report="results/data/dghs_id.report.json",
    params:
        source=config["datasets"]["dghs"],
        label=config["dghs_split"]["label"],
        splits=config["dghs_split"]["splits"],
        targets=config["dghs_split"]["targets"],
        offline=config["offline"],
    log:
        "logs/dghs_split.log",
    threads: threads_of("dghs_split")
    resources:
        **resources_of("dghs_split"),
    conda:
        ENV_DATA
    script:
        "../workflow/scripts/dghs_split.py"


rule toxigen_split:
    input:
        train=dataset_files("toxigen_train"),
        test=dataset_files("toxigen_test"),
        lib=lib("data", "models"),
    output:
        test="results/data/toxigen_test.jsonl",
        val="results/data/toxigen_val.jsonl",
        report="results/data/toxigen_split.report.json",
    params:
        train_source=config["datasets"]["toxigen_train"],
        test_source=config["datasets"]["toxigen_test"],
        val_fraction=config["toxigen_split"]["val_fraction"],
        seed=config["seed"],
        offline=config["offline"],
    log:
        "logs/toxigen_split.log",
    threads: threads_of("toxigen_split")
    resources:
        **resources_of("toxigen_split"),
    conda:
        ENV_DATA
    script:
        "../workflow/scripts/toxigen_split.py"
