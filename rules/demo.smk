# The demo world (SPEC §8): synthetic data in the real schemas, tokenizers of the real families, tiny models
# of the real architectures and a Detoxify-format classifier, all made from `demo.seed`. Only the demo config
# uses them: its registry points at these outputs, so the rest of the DAG runs unchanged.

if "demo" in config:
    DEMO = config["demo"]
    DEMO_DATA = "results/demo/data"

    rule demo_corpus:
        input:
            lib("demo/corpus"),
        output:
            dghs=f"{DEMO_DATA}/dghs.csv",
            toxigen_train=f"{DEMO_DATA}/toxigen_train.csv",
            toxigen_test=f"{DEMO_DATA}/toxigen_test.csv",
            mmlu=f"{DEMO_DATA}/mmlu.jsonl",
            mmlu_dev=f"{DEMO_DATA}/mmlu_dev.jsonl",
            rewrite_pairs=f"{DEMO_DATA}/rewrite_pairs.jsonl",
            pretrain=f"{DEMO_DATA}/pretrain.jsonl",
            classifier_train=f"{DEMO_DATA}/classifier_train.jsonl",
        params:
            seed=DEMO["seed"],
            n_dghs=DEMO["n_dghs"],
            n_toxigen_train=DEMO["n_toxigen_train"],
            n_toxigen_test=DEMO["n_toxigen_test"],
            n_mmlu=DEMO["n_mmlu"],
            n_rewrite_pairs=DEMO["n_rewrite_pairs"],
            n_pretrain=DEMO["n_pretrain"],
        log:
            "logs/demo_corpus.log",
        threads: 1
        resources:
            **resources_of("demo"),
        conda:
            ENV_DATA
        script:
            "../workflow/scripts/demo_corpus.py"

    rule demo_tokenizer:
        input:
            corpus=rules.demo_corpus.output,
            lib=lib("demo/tokenizer"),
        output:
            directory("results/demo/tokenizers/{kind}"),
        params:
            kind="{kind}",
            vocab_size=DEMO["tokenizer_vocab"],
        wildcard_constraints:
            kind="bpe|sentencepiece",
        log:
            "logs/demo_tokenizer/{kind}.log",
        threads: 1
        resources:
            **resources_of("demo"),
        conda:
            ENV_TORCH
        script:
            "../workflow/scripts/demo_tokenizer.py"

    rule demo_pretrain:
        input:
            tokenizer=lambda wc: f"results/demo/tokenizers/{DEMO['models'][wc.name].get('tokenizer', 'bpe')}",
            rewrite_pairs=rules.demo_corpus.output.rewrite_pairs,
            pretrain=rules.demo_corpus.output.pretrain,
            lib=lib("demo/tiny_models", "train", "rewrite", "models"),
        output:
            directory("results/demo/models/{name}"),
        params:
            arch=lambda wc: DEMO["models"][wc.name]["arch"],
            size=lambda wc: DEMO["models"][wc.name]["size"],
            demonstrations=lambda wc: DEMO["models"][wc.name].get("demonstrations", 0),
            seed=DEMO["seed"],
            steps=lambda wc: DEMO["models"][wc.name].get("steps", DEMO["pretrain"]["steps"]),
            lr=DEMO["pretrain"]["lr"],
            batch_size=DEMO["pretrain"]["batch_size"],
            micro_batches=lambda wc: DEMO["models"][wc.name].get("micro_batches", DEMO["pretrain"].get("micro_batches", 1)),
            seq_len=DEMO["pretrain"]["seq_len"],
        log:
            "logs/demo_pretrain/{name}.log",
        benchmark:
            "results/benchmarks/demo_pretrain/{name}.tsv"
        threads: 1
        resources:
            **resources_of("demo"),
        conda:
            ENV_TORCH
        script:
            "../workflow/scripts/demo_pretrain.py"

    rule demo_classifier:
        input:
            train=rules.demo_corpus.output.classifier_train,
            lib=lib("demo/classifier"),
        output:
            checkpoint="results/demo/classifier/detoxify_demo.ckpt",
        params:
            seed=DEMO["seed"],
        log:
            "logs/demo_classifier.log",
        benchmark:
            "results/benchmarks/demo_classifier.tsv"
        threads: 1
        resources:
            **resources_of("demo"),
        conda:
            ENV_TORCH
        script:
            "../workflow/scripts/demo_classifier.py"
