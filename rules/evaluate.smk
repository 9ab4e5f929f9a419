# Evaluation (SPEC §5, UniDetox protocol), the same rules for every system: per evaluation seed, ToxiGen
# continuations with their toxicity and Dist-n (one job: the model loads once); then the conditional perplexity
# of every seed's continuations under the PPL model (one job per evaluated model: the PPL model loads once, and a
# new seed reruns only its own generation); MMLU once per model. An evaluated model is
# results/eval/{split}/{target}/{system}/{setting}: split `val` for the sweeps that choose a hyper-parameter,
# `test` for the tables; setting `base`, `ft<seed>` (the chosen step) or `ft<seed>-step<N>` (one candidate).

EVAL = config["evaluation"]
EVAL_DIR = "results/eval/{split}/{target}/{system}/{setting}"
PROMPTS = "results/data/toxigen_{split}.jsonl"


rule toxigen_eval:
    input:
        prompts=PROMPTS,
        model=eval_model_files,
        selection=eval_selection,
        trained=trained_files,
        scorer=scorer_files(),
        lib=lib("evaluate", "models", "selection", "scoring", "metrics", "treatments", "baselines", "decoding"),
    output:
        generations=f"{EVAL_DIR}/seed{{seed}}/generations.jsonl",
        scores=f"{EVAL_DIR}/seed{{seed}}/toxicity.jsonl",
        metrics=f"{EVAL_DIR}/seed{{seed}}/toxigen.json",
        diversity=f"{EVAL_DIR}/seed{{seed}}/diversity.json",
    params:
        model=eval_model_spec,
        treatment=treatment,
        n_samples=EVAL["n_samples"],
        max_new_tokens=EVAL["max_new_tokens"],
        top_p=EVAL["top_p"],
        temperature=EVAL["temperature"],
        top_k=50 if EVAL["unidetox_compat"] else None,
        scorer=config["toxicity_scorer"],
        threshold=EVAL["toxicity_threshold"],
        dist_compat=EVAL["dist_compat"],
        offline=config["offline"],
    log:
        "logs/toxigen_eval/{split}/{target}/{system}/{setting}/seed{seed}.log",
    benchmark:
        "results/benchmarks/toxigen_eval/{split}/{target}/{system}/{setting}/seed{seed}.tsv"
    threads: threads_of("toxigen_eval")
    resources:
        **resources_of("toxigen_eval", target_size),
        batch_prompts=EVAL["batch_prompts"],
        score_batch_size=config["ranking"]["batch_size"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/toxigen_eval.py"


rule perplexity:
    input:
        prompts=PROMPTS,
        generations=lambda wc: [f"{EVAL_DIR}/seed{s}/generations.jsonl".format(**wc) for s in split_seeds(wc)],
        model=model_files(EVAL["perplexity_model"]),
        lib=lib("evaluate", "metrics", "models"),
    output:
        f"{EVAL_DIR}/perplexity.json",
    params:
        seeds=split_seeds,
        model=config["models"][EVAL["perplexity_model"]],
        model_name=EVAL["perplexity_model"],
        ppl_max=EVAL["ppl_max"],
        offline=config["offline"],
    log:
        "logs/perplexity/{split}/{target}/{system}/{setting}.log",
    benchmark:
        "results/benchmarks/perplexity/{split}/{target}/{system}/{setting}.tsv"
    threads: threads_of("perplexity")
    resources:
        **resources_of("perplexity"),
        batch_size=EVAL["ppl_batch_size"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/perplexity.py"


rule mmlu:
    input:
        model=eval_model_files,
        selection=eval_selection,
        trained=trained_files,
        task=mmlu_task_files,
        lib=lib("evaluate", "models", "selection", "treatments", "baselines"),
    output:
        "results/eval/test/{target}/{system}/{setting}/mmlu.json",
    params:
        model=eval_model_spec,
        treatment=treatment,
        task={k: v for k, v in EVAL["mmlu"].items() if k in ("task", "local", "dev")},
        num_fewshot=lambda wc: config["targets"][wc.target]["mmlu_shots"],
        limit=EVAL["mmlu"]["limit"],
        offline=config["offline"],
    log:
        "logs/mmlu/{target}/{system}/{setting}.log",
    benchmark:
        "results/benchmarks/mmlu/{target}/{system}/{setting}.tsv"
    threads: threads_of("mmlu")
    resources:
        **resources_of("mmlu", target_size),
        batch_size=EVAL["mmlu"]["batch_size"],
    conda:
        ENV_TORCH
    script:
        "../workflow/scripts/mmlu.py"


rule aggregate:
    input:
        toxigen=run_files("toxigen"),
        perplexity=run_files("perplexity"),
        diversity=run_files("diversity"),
        mmlu=run_files("mmlu"),
        selections=selection_files(),
        lib=lib("metrics", "selection", "systems"),
    output:
        runs="results/metrics/runs.csv",
        summary=report("results/metrics/summary.csv", caption="../workflow/report/summary.rst", category="Metrics"),
    params:
        models=[{"target": e.target, "system": e.system, "ft": e.setting} for e in EVALUATED],
        seeds=EVAL_SEEDS,
    log:
        "logs/aggregate.log",
    threads: threads_of("aggregate")
    resources:
        **resources_of("aggregate"),
    conda:
        ENV_DATA
    script:
        "../workflow/scripts/aggregate.py"
