# Small helpers shared by the rules: library modules as inputs, sources as inputs, resources, targets.

from hspd.config import METHOD_RE, ORIGINAL, corpus_name, grid_cells, grid_corpora, parse_corpus, rule_resources

LIB = "src/hspd"
ENV_TORCH = "../envs/torch.yaml"
ENV_DATA = "../envs/data.yaml"
ENV_REPORT = "../envs/report.yaml"

wildcard_constraints:
    base=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    method=METHOD_RE,
    corpus=rf"(?:{METHOD_RE})_[A-Za-z0-9._-]+|{ORIGINAL}",
    target=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    shard=r"\d+",
    seed=r"\d+",
    ft=r"ft\d+|base",
    name=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def lib(*modules):
    """Library modules a rule's results depend on, declared as inputs so a change reruns the rule."""
    return [f"{LIB}/{m}.py" for m in ("io", "errors", *modules)]


def source_files(spec):
    """A local source is an input (made by a demo rule or given by the user); a hub source is a param."""
    return [spec["path"]] if "path" in spec else []


def model_files(name):
    return source_files(config["models"][name])


def dataset_files(key):
    return source_files(config["datasets"][key])


def scorer_files():
    spec = config["toxicity_scorer"]
    return [spec["checkpoint"]] if "checkpoint" in spec else []


def resources_of(rule_name, size=None):
    """Cluster resources from the config (`resources:` of `rule_name`), with per-size overrides.

    `size` is a function of the wildcards (a target's size class, or a base model's name)."""
    def get(key):
        return lambda wc: rule_resources(config, rule_name, size(wc) if size else None)[key]

    return {"gpu": get("gpu"), "mem_mb": get("mem_mb"), "runtime": get("runtime")}


def threads_of(rule_name):
    return lambda wc: rule_resources(config, rule_name)["cpus"]


def target_size(wc):
    return config["targets"][wc.target]["size"]


def base_size(wc):
    return wc.base


# ------------------------------------------------------------------------------------------------------
# What gets evaluated
# ------------------------------------------------------------------------------------------------------

CELLS = grid_cells(config)
FT_SEEDS = config["finetune"]["seeds"]
EVAL_SEEDS = config["evaluation"]["seeds"]


def ft_dirs():
    """(target, corpus, ft) path parts of every evaluated model: ft<seed>, or `base` for the original."""
    return [(c.target, c.corpus, "base" if c.ft_seed is None else f"ft{c.ft_seed}") for c in CELLS]


def evaluated_model(wc):
    """Inputs and spec of the model evaluated for (target, corpus, ft)."""
    if wc.corpus == ORIGINAL:
        return model_files(config["targets"][wc.target]["model"])
    return [f"results/models/finetuned/{wc.target}/{wc.corpus}/{wc.ft}"]


def evaluated_spec(wc):
    """The source spec the evaluation loads: the target itself, or the chosen fine-tuning checkpoint."""
    if wc.corpus == ORIGINAL:
        return config["models"][config["targets"][wc.target]["model"]]
    step = config["finetune"]["eval_step"]
    return {"path": f"results/models/finetuned/{wc.target}/{wc.corpus}/{wc.ft}/step{step}"}


def all_corpora():
    return [f"results/corpora/{b}/{m}.jsonl" for b, m in grid_corpora(config)]


def final_outputs():
    return [
        "results/data/dghs_id.jsonl",
        "results/data/toxigen_test.jsonl",
        "results/models/toxic",
        *all_corpora(),
        "results/direct_toxicity/direct_toxicity.csv",
        "results/figures/fig3_direct_toxicity.png",
        "results/metrics/runs.csv",
        "results/metrics/summary.csv",
        "results/tables/table1.md",
        "results/tables/table3.md",
        "results/figures/fig2_divergences.png",
        "results/figures/ppl_vs_tp.png",
    ]


# ------------------------------------------------------------------------------------------------------
# Inputs and params that depend on wildcards
# ------------------------------------------------------------------------------------------------------

def toxic_model_input(wc):
    """Only the contrastive methods read the toxic model."""
    return [] if wc.method == "prompt" else ["results/models/toxic"]


def corpus_file(wc):
    method, base = parse_corpus(wc.corpus)
    return f"results/corpora/{base}/{method}.jsonl"


def target_spec(wc):
    return config["models"][config["targets"][wc.target]["model"]]


def target_files(wc):
    return model_files(config["targets"][wc.target]["model"])


def mmlu_task_files(wc):
    m = config["evaluation"]["mmlu"]
    return [m["local"], m["dev"]] if "local" in m else []


def run_files(kind):
    """Every per-run result file of one kind over all evaluated models and evaluation seeds."""
    parts = ft_dirs()
    if kind == "mmlu":
        return [f"results/eval/{t}/{c}/{f}/mmlu.json" for t, c, f in parts]
    return [f"results/eval/{t}/{c}/{f}/seed{s}/{kind}.json" for t, c, f in parts for s in EVAL_SEEDS]
