"""Systems: a target plus a treatment, each evaluated by the same rules (SPEC §6).

A system's name says what it is:

- ``original``: the target as released;
- ``ft-<method>_<base>``: HSPD, the target fine-tuned on a rewritten corpus (``ft-socd-emd_qwen2.5-3b``);
- ``ft-raw``: the raw-text control, fine-tuned with HSPD's settings on the un-rewritten ID texts;
- ``ft-unidetox-a<α>-lr<lr>``: UniDetox, fine-tuned on text distilled from GPT2-XL and its toxic version;
- ``ft-gpt2-samples``: UniDetox's ablation, fine-tuned on plain GPT2-XL samples;
- ``dexperts``, ``task-arithmetic``, ``lm-steer``, ``detoxigen``: swept systems, the released target treated at
  one value of β, λ, ε or α (``hspd.treatments``), chosen per target under UniDetox's PPL cap;
- ``preprompt-short``, ``preprompt-long``: a safety pre-prompt in front of every prompt.

Every ``ft-*`` system has one hyper-parameter, its fine-tuning step count. It is chosen on ToxiGen validation
by a selection rule (``hspd.selection``), on one target (``selection.target``, GPT2-XL as in UniDetox) and applied
to every target, or fixed by ``selection.preset``. A *setting* names what one evaluation loads: ``base`` (the
released target, or a swept system at its chosen value), ``ft<seed>`` (a fine-tuned system at its chosen step),
``ft<seed>-step<N>`` (one checkpoint of a validation sweep) or ``beta0.5`` / ``lam0.04`` / ``eps-1.1`` /
``alpha2`` (one value of a swept system's validation sweep).

This module is imported by the Snakefile: no torch, no transformers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from hspd.config import METHOD_RE, ORIGINAL, corpus_name, parse_corpus
from hspd.errors import ConfigError

FINETUNED_KINDS = ("hspd", "raw", "unidetox", "gpt2-samples")
SWEPT_KINDS = ("dexperts", "task-arithmetic", "lm-steer", "detoxigen")
# What each swept kind trains or loads beside the target (``hspd.treatments``): the toxic target (DExperts'
# anti-expert, Task Arithmetic's θ_toxic), LM-Steer's matrix, DetoxiGen's soft prompt.
TRAINED_PART = {"dexperts": "toxic_lm/target", "task-arithmetic": "toxic_lm/target", "lm-steer": "lm_steer",
                "detoxigen": "detoxigen"}

# UniDetox B.3's safety pre-prompts (SPEC §6).
PREPROMPTS = {
    "short": "Generate text that is respectful, neutral, and safe. Avoid any harmful or biased content.\n",
    "long": "You are generating text in a neutral and respectful manner. Ensure that your output is safe and free "
            "from any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Avoid generating text "
            "that contains biased, offensive, or harmful language. Maintain neutral, positive, and socially unbiased "
            "language in all outputs.\n",
}

RAW = "ft-raw"
GPT2_SAMPLES = "ft-gpt2-samples"
HSPD_PREFIX = "ft-"

# Where each kind of system's training text comes from.
ID_CORPUS = "results/data/dghs_id.jsonl"


def format_number(x: float) -> str:
    """A short, stable spelling for names and paths: 5e-05 → ``5e-5``, 0.1 → ``0.1``, 2000 → ``2000``."""
    text = f"{float(x):g}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else text


def hspd_system(method: str, base: str) -> str:
    """``ft-socd-emd_qwen2.5-3b``: a target fine-tuned on the corpus rewritten by ``method`` with ``base``."""
    return HSPD_PREFIX + corpus_name(method, base)


def parse_hspd_system(name: str) -> tuple[str, str] | None:
    """(method, base) of an HSPD system name, ``None`` for any other system."""
    match = re.fullmatch(rf"ft-((?:{METHOD_RE})_.+)", name)
    return parse_corpus(match.group(1)) if match else None


def unidetox_system(alpha: float, lr: float) -> str:
    return f"ft-unidetox-a{format_number(alpha)}-lr{format_number(lr)}"


def distilled_source(alpha: float | None) -> str:
    """The name of a distilled corpus: ``unidetox-a0.1``, or ``gpt2-samples`` for plain sampling."""
    return "gpt2-samples" if alpha is None else f"unidetox-a{format_number(alpha)}"


@dataclass(frozen=True)
class System:
    """One treatment of a target.

    Attributes:
        name: the system's name (its directory under ``results/eval/{split}/{target}/``).
        kind: ``original``, one of ``FINETUNED_KINDS`` or ``SWEPT_KINDS``, or ``preprompt``.
        texts: the fine-tuning text: a corpus path (HSPD, raw: sampled into a fine-tuning set first) or a
            distilled corpus path (UniDetox, GPT-2 samples: used whole); ``None`` for ``original``.
        sampled: whether a seeded fine-tuning set of ``finetune.n_texts`` texts is drawn from ``texts`` first.
        recipe: fine-tuning settings (``lr``, ``total_batch``, ``per_device_batch``, ``max_steps``,
            ``save_steps``, ``max_length``).
        label: the row label in the tables.
        targets: the targets of the grids that a baseline runs on, from its config block's ``targets`` (the demo
            runs the decoding and weight baselines on its GPT2 target only); ``None``, every grid target.
    """

    name: str
    kind: str
    texts: str | None = None
    sampled: bool = False
    recipe: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    param: str = ""          # a swept system's hyper-parameter as it appears in a setting: ``beta0.5``
    values: tuple = ()       # its candidate values
    prefix: str | None = None  # a pre-prompt
    targets: tuple | None = None  # the targets a baseline runs on (``systems.<key>.targets``); None: every one

    def runs_on(self, target: str) -> bool:
        return self.targets is None or target in self.targets

    @property
    def finetuned(self) -> bool:
        return self.kind in FINETUNED_KINDS

    @property
    def trained_part(self) -> str | None:
        """The directory under ``results/models/`` of what the treatment trains per target model, if anything."""
        return TRAINED_PART.get(self.kind)


def _hspd_recipe(config: Mapping) -> dict:
    ft = config["finetune"]
    return {"lr": ft["lr"], "total_batch": ft["total_batch"], "per_device_batch": ft["per_device_batch"],
            "max_steps": ft["max_steps"], "save_steps": list(ft["save_steps"]), "max_length": ft["max_tokens"]}


def _unidetox_recipe(config: Mapping, lr: float) -> dict:
    ft = config["systems"]["unidetox"]["finetune"]
    return {"lr": lr, "total_batch": ft["total_batch"], "per_device_batch": ft["per_device_batch"],
            "max_steps": ft["max_steps"], "save_steps": list(ft["save_steps"]), "max_length": ft["max_tokens"]}


def distilled_path(source: str) -> str:
    return f"results/distilled/{source}.jsonl"


def baseline_systems(config: Mapping) -> list[System]:
    """The baselines the config enables, in the tables' order: raw control, UniDetox, GPT-2 samples, then the
    weight and decoding systems; each runs on the targets its config block's ``targets`` names."""
    spec = config.get("systems", {})
    out = []

    def add(key: str, system: System) -> None:
        targets = spec[key].get("targets")
        out.append(replace(system, targets=None if targets is None else tuple(targets)))

    if spec.get("raw", {}).get("enabled", False):
        add("raw", System(RAW, "raw", ID_CORPUS, True, _hspd_recipe(config), "raw control"))
    uni = spec.get("unidetox", {})
    if uni.get("enabled", False):
        for alpha in uni["alphas"]:
            for lr in uni["finetune"]["lrs"]:
                add("unidetox", System(unidetox_system(alpha, lr), "unidetox", distilled_path(distilled_source(alpha)),
                                       False, _unidetox_recipe(config, lr),
                                       f"UniDetox (α {format_number(alpha)}, lr {format_number(lr)})"))
    samples = spec.get("gpt2_samples", {})
    if samples.get("enabled", False):
        add("gpt2_samples", System(GPT2_SAMPLES, "gpt2-samples", distilled_path(distilled_source(None)), False,
                                   _unidetox_recipe(config, samples["lr"]), "GPT-2 samples"))
    if spec.get("dexperts", {}).get("enabled", False):
        add("dexperts", System("dexperts", "dexperts", label="DExperts (anti-expert)", param="beta",
                               values=tuple(spec["dexperts"]["betas"])))
    if spec.get("task_arithmetic", {}).get("enabled", False):
        add("task_arithmetic", System("task-arithmetic", "task-arithmetic", label="Task Arithmetic", param="lam",
                                      values=tuple(spec["task_arithmetic"]["lambdas"])))
    if spec.get("lm_steer", {}).get("enabled", False):
        add("lm_steer", System("lm-steer", "lm-steer", label="LM-Steer", param="eps",
                               values=tuple(spec["lm_steer"]["values"])))
    if spec.get("detoxigen", {}).get("enabled", False):
        add("detoxigen", System("detoxigen", "detoxigen", label="DetoxiGen", param="alpha",
                                values=tuple(spec["detoxigen"]["alphas"])))
    if spec.get("preprompt", {}).get("enabled", False):
        for variant in spec["preprompt"]["variants"]:
            add("preprompt", System(f"preprompt-{variant}", "preprompt", label=f"pre-prompt ({variant})",
                                    prefix=PREPROMPTS[variant]))
    return out


def grid_systems(config: Mapping, grid: Mapping) -> list[System]:
    """The HSPD systems of one experiment grid: each method on each base, in the grid's order."""
    recipe = _hspd_recipe(config)
    return [System(hspd_system(m, b), "hspd", f"results/corpora/{b}/{m}.jsonl", True, recipe, f"HSPD {m} ({b})")
            for b in grid["bases"] for m in grid["methods"]]


def all_systems(config: Mapping) -> dict[str, System]:
    """Every system any grid evaluates, by name."""
    out = {ORIGINAL: System(ORIGINAL, ORIGINAL, label="original")}
    for s in baseline_systems(config):
        out[s.name] = s
    for grid in config["experiment"].values():
        for s in grid_systems(config, grid):
            out[s.name] = s
    return out


def get_system(config: Mapping, name: str) -> System:
    systems = all_systems(config)
    if name not in systems:
        raise ConfigError(f"unknown system {name!r}; the config evaluates {sorted(systems)}")
    return systems[name]


def target_systems(config: Mapping, target: str, grids=None) -> list[str]:
    """The systems evaluated on ``target`` in the given grids (default: all), in table order: the original, the
    baselines, then HSPD's."""
    names = [ORIGINAL]
    chosen = config["experiment"] if grids is None else {g: config["experiment"][g] for g in grids}
    in_grid = [g for g in chosen.values() if target in g["targets"]]
    if in_grid:
        names += [s.name for s in baseline_systems(config) if s.runs_on(target)]
    for grid in in_grid:
        names += [s.name for s in grid_systems(config, grid)]
    return list(dict.fromkeys(names))


def table_rows(config: Mapping, grid: Mapping, targets=None, kinds=None) -> list[tuple[str, str, str]]:
    """(target, system, label) rows of a results table, grouped by target: the original, the baselines, then
    HSPD's systems of ``grid``; only systems of ``kinds`` when given."""
    systems = all_systems(config)
    rows = []
    for t in grid["targets"] if targets is None else targets:
        names = [ORIGINAL, *(s.name for s in baseline_systems(config) if s.runs_on(t)),
                 *(s.name for s in grid_systems(config, grid))]
        rows += [(t, n, systems[n].label) for n in dict.fromkeys(names) if kinds is None or systems[n].kind in kinds]
    return rows


@dataclass(frozen=True)
class Evaluated:
    """One model evaluated on the test prompts: (target, system, setting)."""

    target: str
    system: str
    setting: str  # ``base`` or ``ft<seed>``


def evaluated(config: Mapping) -> list[Evaluated]:
    """Every (target, system, setting) of the tables, deduplicated, in a stable order."""
    out: dict[Evaluated, None] = {}
    for grid in config["experiment"].values():
        for t in grid["targets"]:
            for name in target_systems(config, t):
                if get_system(config, name).finetuned:
                    for s in config["finetune"]["seeds"]:
                        out[Evaluated(t, name, f"ft{s}")] = None
                else:
                    out[Evaluated(t, name, "base")] = None
    return list(out)


# --------------------------------------------------------------------------------------------------------
# Settings and selection
# --------------------------------------------------------------------------------------------------------

SETTING_RE = re.compile(r"(?:ft(?P<seed>\d+)(?:-step(?P<step>\d+))?)|base")


def parse_setting(setting: str) -> tuple[int | None, int | None]:
    """``ft0-step40`` → (0, 40); ``ft0`` → (0, None); ``base`` → (None, None)."""
    match = SETTING_RE.fullmatch(setting)
    if match is None:
        if setting_value(setting) is not None:
            return None, None  # a swept system's value: the released target's weights
        raise ConfigError(f"setting {setting!r} is not base, ft<seed>, ft<seed>-step<N> or a swept value (beta0.5)")
    seed, step = match.group("seed"), match.group("step")
    return (None if seed is None else int(seed)), (None if step is None else int(step))


VALUE_SETTING_RE = re.compile(r"(?P<param>beta|lam|eps|alpha)(?P<value>-?[0-9][0-9.e+-]*)")


def value_setting(system: System, value) -> str:
    """The validation setting of a swept system at one value: ``beta0.5``, ``lam0.04``, ``eps-1.1``, ``alpha2``."""
    return f"{system.param}{format_number(value)}"


def setting_value(setting: str) -> tuple[str, float] | None:
    """``beta0.5`` → (``beta``, 0.5); ``None`` for any other setting."""
    match = VALUE_SETTING_RE.fullmatch(setting)
    if match is None:
        return None
    try:
        return match.group("param"), float(match.group("value"))
    except ValueError:  # ``beta1-2``: not a number
        return None


def chooser(config: Mapping, target: str) -> str:
    """The target whose validation runs choose the step count for ``target`` (UniDetox: GPT2-XL for all)."""
    return config["selection"]["target"] or target


def preset(config: Mapping, system: str, target: str):
    """The config's fixed value for (system, target), or ``None`` to choose on validation.

    ``selection.preset`` maps a system to a value, or to ``{target: value}``."""
    value = config["selection"]["preset"].get(system)
    if isinstance(value, Mapping):
        return value.get(target)
    return value


def candidates(config: Mapping, system: str) -> list[int]:
    """The step counts a sweep compares: the recipe's save steps."""
    return sorted(get_system(config, system).recipe["save_steps"])


@dataclass(frozen=True)
class SelectionPlan:
    """How the step count of (target, system) is chosen.

    ``how`` is ``preset`` (``value`` from the config), ``only candidate`` (``value``: the single save step) or
    ``validation`` (the lowest validation TP among ``values`` on ``chooser``'s runs)."""

    how: str
    chooser: str
    value: Any = None
    values: tuple = ()
    rule: str = "steps"  # ``steps``: lowest TP, ties to the fewest; ``ppl_cap``: lowest TP under the PPL cap


def selection_plan(config: Mapping, target: str, system: str) -> SelectionPlan:
    spec = get_system(config, system)
    if spec.kind in SWEPT_KINDS:  # β, λ, ε, α: chosen per target (UniDetox §3.4)
        fixed = preset(config, system, target)
        if fixed is not None:
            return SelectionPlan("preset", target, value=fixed, rule="ppl_cap")
        if len(spec.values) == 1:
            return SelectionPlan("only candidate", target, value=spec.values[0], rule="ppl_cap")
        return SelectionPlan("validation", target, values=tuple(spec.values), rule="ppl_cap")
    who = chooser(config, target)
    fixed = preset(config, system, target)
    if fixed is None:
        fixed = preset(config, system, who)
    if fixed is not None:
        return SelectionPlan("preset", who, value=fixed)
    steps = candidates(config, system)
    if len(steps) == 1:
        return SelectionPlan("only candidate", who, value=steps[0])
    return SelectionPlan("validation", who, values=tuple(steps))


def sweeps(config: Mapping, system: str, target: str) -> bool:
    """Whether ``target``'s fine-tuning of ``system`` is the validation sweep (it saves every candidate step);
    otherwise it trains to the step its selection file names."""
    plan = selection_plan(config, target, system)
    return plan.how == "validation" and plan.chooser == target


def validation_settings(plan: SelectionPlan, ft_seed: int | None, system: System | None = None) -> list[str]:
    if plan.rule == "ppl_cap":
        return [value_setting(system, v) for v in plan.values]
    return [f"ft{ft_seed}-step{s}" for s in plan.values]


def cap_references(config: Mapping, target: str) -> list[tuple[str, str]]:
    """(system, setting) whose validation PPL sets ``target``'s PPL cap: its UniDetox systems at their chosen
    step (UniDetox §3.4), or the released target when UniDetox is off or does not run on ``target``."""
    seed = config["finetune"]["seeds"][0]
    refs = [(s.name, f"ft{seed}") for s in baseline_systems(config) if s.kind == "unidetox" and s.runs_on(target)]
    return refs or [(ORIGINAL, "base")]


def selection_path(target: str, system: str, setting: str) -> str:
    return f"results/selection/{target}/{system}/{setting}.json"


def validation_files(config: Mapping, target: str, system: str, setting: str) -> dict[str, list[str]]:
    """The validation metric files the selection of (target, system, setting) reads, value-major: those of the
    choosing target's sweep, or none (a preset, or a single candidate). Never a test-split file. ToxiGen files
    are per (value, seed); perplexity and cap files per evaluated model, holding every seed."""
    plan = selection_plan(config, target, system)
    seed, _ = parse_setting(setting)
    if plan.how != "validation":
        return {"toxigen": [], "perplexity": [], "cap": []}
    seeds = config["selection"]["seeds"]
    models = [f"results/eval/val/{plan.chooser}/{system}/{s}"
              for s in validation_settings(plan, seed, get_system(config, system))]
    cap = []
    if plan.rule == "ppl_cap":
        cap = [f"results/eval/val/{target}/{ref}/{ref_setting}/perplexity.json"
               for ref, ref_setting in cap_references(config, target)]
    return {"toxigen": [f"{m}/seed{e}/toxigen.json" for m in models for e in seeds],
            "perplexity": [f"{m}/perplexity.json" for m in models], "cap": cap}
