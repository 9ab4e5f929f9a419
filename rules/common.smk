# Small helpers shared by the rules: library modules as inputs, sources as inputs, resources, targets.

from hspd.config import METHOD_RE, ORIGINAL, grid_corpora, rule_resources
from hspd.deps import LIBRARY, closure, module_file
import hspd.systems as S

LIB = "src/hspd"
ENV_TORCH = "../envs/torch.yaml"
ENV_DATA = "../envs/data.yaml"
ENV_REPORT = "../envs/report.yaml"

wildcard_constraints:
    base=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    method=METHOD_RE,
    target=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    system=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    setting=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    split=r"val|test",
    source=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    recipe=r"unidetox|target",
    part=r"lm_steer|detoxigen",
    shard=r"\d+",
    seed=r"\d+",
    name=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def lib(*modules):
    """Library modules a rule's results depend on, declared as inputs so a change reruns the rule: those its
    script imports (`modules`, with `io`, `errors` and `jobs`, which every script uses) and every module they
    import in turn (hspd.deps)."""
    return [f"{LIB}/{module_file(m).relative_to(LIBRARY).as_posix()}" for m in closure(("io", "errors", "jobs", *modules))]


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


# Config resource keys → the resource names Snakemake and its SLURM executor read.
RESOURCE_NAMES = {"gpu": "gpu", "mem_mb": "mem_mb", "runtime": "runtime", "partition": "slurm_partition",
                  "gpu_model": "gpu_model", "constraint": "constraint", "slurm_extra": "slurm_extra"}


def resources_of(rule_name, size=None):
    """Cluster resources from the config (`resources:` of `rule_name`), with per-size overrides, and the
    `device` the job computes on (hspd.jobs checks it). Resources are not compared by Snakemake, so none of
    these reruns anything; an unset optional key is None, which Snakemake drops.

    `size` is a function of the wildcards (a target's size class, or a base model's name)."""
    def get(key):
        return lambda wc: rule_resources(config, rule_name, size(wc) if size else None).get(key)

    return {name: get(key) for key, name in RESOURCE_NAMES.items()} | {"device": config["device"]}


def threads_of(rule_name):
    return lambda wc: rule_resources(config, rule_name)["cpus"]


def target_size(wc):
    return config["targets"][wc.target]["size"]


def base_size(wc):
    return wc.base


def model_size(wc):
    """The size class of the target a registry model is, if it is one (a toxic version of a target)."""
    return next((t["size"] for t in config["targets"].values() if t["model"] == wc.model), None)


# ------------------------------------------------------------------------------------------------------
# What gets evaluated: systems (hspd.systems), each a target plus a treatment
# ------------------------------------------------------------------------------------------------------

EVALUATED = S.evaluated(config)
EVAL_SEEDS = config["evaluation"]["seeds"]


def system_of(wc):
    return S.get_system(config, wc.system)


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
        "results/tables/unidetox.md",
        "results/figures/fig2_divergences.png",
        "results/figures/ppl_vs_tp.png",
        "results/figures/validation_sweep.png",
        "results/figures/validation_ppl_tp.png",
    ]


def all_corpora():
    return [f"results/corpora/{b}/{m}.jsonl" for b, m in grid_corpora(config)]


# ------------------------------------------------------------------------------------------------------
# Inputs and params that depend on wildcards
# ------------------------------------------------------------------------------------------------------

def toxic_model_input(wc):
    """Only the contrastive methods read the toxic model."""
    return [] if wc.method == "prompt" else ["results/models/toxic"]


def target_spec(wc):
    return config["models"][config["targets"][wc.target]["model"]]


def target_files(wc):
    return model_files(config["targets"][wc.target]["model"])


def finetuned_dir(target, system, ft_seed):
    return f"results/models/finetuned/{target}/{system}/ft{ft_seed}"


def selection_input(wc):
    """The selection a fine-tuning run trains to: none when this run is the sweep itself."""
    if S.sweeps(config, wc.system, wc.target):
        return []
    return [S.selection_path(wc.target, wc.system, f"ft{wc.seed}")]


def eval_model_files(wc):
    """The model an evaluation (target, system, setting) loads: the released target, or a fine-tuning run."""
    ft_seed, _ = S.parse_setting(wc.setting)
    if ft_seed is None:
        return target_files(wc)
    return [finetuned_dir(wc.target, wc.system, ft_seed)]


def eval_model_spec(wc):
    """What the evaluation script loads: a registry spec, a sweep's checkpoint, or a run directory whose
    chosen checkpoint the script finds in the selection file (`eval_selection`)."""
    ft_seed, step = S.parse_setting(wc.setting)
    if ft_seed is None:
        return target_spec(wc)
    run = finetuned_dir(wc.target, wc.system, ft_seed)
    return {"path": f"{run}/step{step}" if step is not None else run}


def eval_selection(wc):
    """The selection record an evaluation reads: a fine-tuned system at its chosen step (`ft<seed>`), a swept
    system at its chosen value (`base`); none for a sweep's own settings or an unswept system."""
    system = system_of(wc)
    ft_seed, step = S.parse_setting(wc.setting)
    if system.finetuned and step is None:
        return [S.selection_path(wc.target, wc.system, wc.setting)]
    if system.kind in S.SWEPT_KINDS and S.setting_value(wc.setting) is None:
        return [S.selection_path(wc.target, wc.system, "base")]
    return []


def treatment(wc):
    """What the evaluation applies to the loaded model (hspd.treatments)."""
    system = system_of(wc)
    value = S.setting_value(wc.setting)
    options = {"top_p": config["systems"]["detoxigen"]["top_p"]} if system.kind == "detoxigen" else {}
    return {"kind": system.kind, "param": system.param or None, "value": value[1] if value else None,
            "prefix": system.prefix, "options": options}


def trained_dir(part, model):
    """What a treatment trains per target model: `toxic_lm/target` (DExperts' anti-expert, Task Arithmetic's
    θ_toxic), `lm_steer` (the steering matrix) or `detoxigen` (the soft prompt)."""
    return f"results/models/{part}/{model}"


def trained_files(wc):
    part = system_of(wc).trained_part
    return [] if part is None else [trained_dir(part, config["targets"][wc.target]["model"])]


def mmlu_task_files(wc):
    m = config["evaluation"]["mmlu"]
    return [m["local"], m["dev"]] if "local" in m else []


def split_seeds(wc):
    """The evaluation seeds of a split: the validation runs' (selection.seeds) or the tables' (evaluation.seeds)."""
    return config["selection"]["seeds"] if wc.split == "val" else EVAL_SEEDS


def run_files(kind):
    """Every test result file of one kind: per evaluated model (MMLU, perplexity over all seeds) or per
    evaluated model and evaluation seed, model-major."""
    if kind in ("mmlu", "perplexity"):
        return [f"results/eval/test/{e.target}/{e.system}/{e.setting}/{kind}.json" for e in EVALUATED]
    return [f"results/eval/test/{e.target}/{e.system}/{e.setting}/seed{s}/{kind}.json"
            for e in EVALUATED for s in EVAL_SEEDS]


def selection_files():
    """The selection record of every evaluated model that has a chosen value (a step count, β, λ)."""
    out = []
    for e in EVALUATED:
        system = S.get_system(config, e.system)
        if system.finetuned or system.kind in S.SWEPT_KINDS:
            out.append(S.selection_path(e.target, e.system, e.setting))
    return out


# ------------------------------------------------------------------------------------------------------
# Fine-tuning, distillation and tables
# ------------------------------------------------------------------------------------------------------

def finetune_texts(wc):
    system = system_of(wc)
    if system.sampled:
        return f"results/finetune_sets/{wc.target}/{wc.system}/seed{wc.seed}.jsonl"
    return system.texts


UNI = config["systems"]["unidetox"]
# Distilled source → UniDetox's α (None: plain samples), for the sources the config enables.
DISTILLED = {S.distilled_source(a): a for a in (UNI["alphas"] if UNI["enabled"] else [])}
if config["systems"]["gpt2_samples"]["enabled"]:
    DISTILLED[S.distilled_source(None)] = None


def distill_toxic(wc):
    return [] if DISTILLED[wc.source] is None else [f"results/models/toxic_lm/unidetox/{UNI['model']}"]


# Toxic versions of a model: UniDetox's GPT2-XL (the ID *train* texts, every text trained on, last weights) and
# each target's (all ID texts, the best held-out checkpoint, as SoCD's toxic model).
TOXIC_RECIPES = {
    "unidetox": {**{k: UNI["toxic"][k] for k in ("lr", "batch_size", "epochs", "max_length", "seed")},
                 "splits": UNI["toxic"]["splits"], "heldout_fraction": None, "eval_every": None},
    "target": {**config["systems"]["toxic_target"], "splits": None},
}


# LM-Steer's and DetoxiGen's training settings (the sweep grids and decoding options are not part of them: changing
# a grid retrains nothing).
TREATMENT_RECIPES = {
    "lm_steer": {k: config["systems"]["lm_steer"][k] for k in ("epsilon", "lr", "batch_size", "epochs", "max_length",
                                                               "seed")},
    "detoxigen": {k: config["systems"]["detoxigen"][k] for k in ("n_virtual", "lr", "batch_size", "epochs",
                                                                 "max_length", "seed")},
}


MAIN = config["experiment"].get("main")
ABLATION = config["experiment"].get("ablation")


def table_params():
    """Rows of each table, (target, system, label): Table 1 every system of the main grid per target; Table 3
    HSPD's methods on the other targets; UniDetox's layout its own rows."""
    if MAIN is None:
        return {}
    first, *others = MAIN["targets"]
    return {
        "table1": S.table_rows(config, MAIN),
        "table3": S.table_rows(config, MAIN, others or [first], kinds=("original", "hspd")),
        "unidetox": S.table_rows(config, MAIN, kinds=("original", "gpt2-samples", "dexperts", "lm-steer",
                                                       "detoxigen", "task-arithmetic", "preprompt", "unidetox")),
    }
