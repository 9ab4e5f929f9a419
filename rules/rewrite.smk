# Rewriting the toxic corpus (SPEC §3): candidates per (base, method) in shards (GPU, expensive), then
# fusion ranking (cheap), so a change of λ reruns ranking and what follows, never decoding.

REWRITE = config["rewrite"]


rule rewrite_candidates:
    input:
        corpus="results/data/dghs_id.jsonl",
        base=lambda wc: model_files(wc.base),
        toxic=toxic_model_input,
        lib=lib("rewrite", "decoding", "socd", "divergences", "models"),
    output:
        "results/candidates/{base}/{method}/shard{shard}.jsonl",
    params:
        base=lambda wc: config["models"][wc.base],
        variant=REWRITE["variant"],
        temperatures=REWRITE["candidates"][REWRITE["variant"]]["temperatures"],
        samples_per_temperature=REWRITE["candidates"][REWRITE["variant"]]["samples_per_temperature"],
        k_min=REWRITE["k_min"],
        cd_alpha=REWRITE["cd"]["alpha"],
        cd_beta=REWRITE["cd"]["beta"],
        max_new_tokens=REWRITE["max_new_tokens"],
        n_shards=REWRITE["shards"],
        seed=REWRITE["seed"],
        offline=config["offline"],
    log:
        "logs/rewrite_candidates/{base}/{method}/shard{shard}.log",
    benchmark:
        "results/benchmarks/rewrite_candidates/{base}/{method}/shard{shard}.tsv"
    threads: threads_of("rewrite_candidates")
    resources:
        **resources_of("rewrite_candidates", base_size),
        batch_texts=REWRITE["batch_texts"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/rewrite_candidates.py"


rule rank_candidates:
    input:
        corpus="results/data/dghs_id.jsonl",
        shards=expand(
            "results/candidates/{{base}}/{{method}}/shard{shard}.jsonl", shard=range(REWRITE["shards"])
        ),
        scorer=scorer_files(),
        embedder=model_files(config["ranking"]["embedder"]),
        lib=lib("scoring", "models"),
    output:
        corpus="results/corpora/{base}/{method}.jsonl",
        scores="results/corpora/{base}/{method}.scores.jsonl",
        report="results/corpora/{base}/{method}.report.json",
    params:
        lam=config["ranking"]["lam"],
        scorer=config["toxicity_scorer"],
        embedder=config["models"][config["ranking"]["embedder"]],
        embedder_name=config["ranking"]["embedder"],
        offline=config["offline"],
    log:
        "logs/rank_candidates/{base}/{method}.log",
    benchmark:
        "results/benchmarks/rank_candidates/{base}/{method}.tsv"
    threads: threads_of("rank_candidates")
    resources:
        **resources_of("rank_candidates"),
        batch_size=config["ranking"]["batch_size"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/rank_candidates.py"


rule direct_toxicity:
    input:
        raw="results/data/dghs_id.jsonl",
        corpora=[f"results/corpora/{b}/{m}.jsonl" for b, m in grid_corpora(config)],
        scorer=scorer_files(),
        lib=lib("scoring", "plots", "models"),
    output:
        table="results/direct_toxicity/direct_toxicity.csv",
        figure=report(
            "results/figures/fig3_direct_toxicity.png",
            caption="../workflow/report/fig3.rst",
            category="Rewriting",
        ),
    params:
        corpora=[{"base": b, "method": m} for b, m in grid_corpora(config)],
        scorer=config["toxicity_scorer"],
        offline=config["offline"],
    log:
        "logs/direct_toxicity.log",
    benchmark:
        "results/benchmarks/direct_toxicity.tsv"
    threads: threads_of("direct_toxicity")
    resources:
        **resources_of("direct_toxicity"),
        batch_size=config["ranking"]["batch_size"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/direct_toxicity.py"
