"""Loading and validating the workflow configuration; the experiment grid and corpus names.

The Snakefile calls :func:`validate` before any job is planned. Errors name the key path
(``rewrite.lam``, ``experiment.main.targets[2]``) so a user can find the line to fix. This module is imported
by the Snakefile, so it must stay light: no torch, no transformers.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hspd.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# The un-fine-tuned target is evaluated as the corpus named "original".
ORIGINAL = "original"

# Rewriting methods (SPEC §3): plain prompting, vanilla contrastive decoding, SoCD with each divergence.
DIVERGENCE_NAMES = ("fkl", "rkl", "js", "jsd", "tvd", "emd", "emd_l2")
METHODS = ("prompt", "cd", *(f"socd-{d}" for d in DIVERGENCE_NAMES))
# Longest names first, so that `socd-emd_l2_qwen` parses as (socd-emd_l2, qwen), not (socd-emd, l2_qwen).
METHOD_RE = "|".join(re.escape(m) for m in sorted(METHODS, key=len, reverse=True))


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def merge(base: Mapping, overlay: Mapping) -> dict:
    """Deep-merge ``overlay`` into a copy of ``base`` (mappings merge key by key; anything else replaces),
    as Snakemake does for several ``--configfiles``."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(*paths: str | Path) -> dict:
    """Load and merge config files in order, then validate."""
    config: dict = {}
    for p in paths:
        config = merge(config, load_yaml(p))
    return validate(config)


def _key_path(parts: Iterable) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(config: Mapping[str, Any]) -> dict:
    """Validate against the JSON schema, then check cross-references; return the config.

    Strings from `snakemake --config` become the numbers and booleans the schema asks for (in place).

    Raises ConfigError listing every problem, each with its key path.
    """
    import jsonschema

    validator = jsonschema.Draft7Validator(_schema())
    _coerce_command_line_strings(config, validator)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(f"{_key_path(err.absolute_path)}: {_short_message(err)}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    problems = _cross_checks(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return dict(config)


_SCALAR_TYPES = {"number": (int, float), "integer": (int,), "boolean": (bool,), "null": (type(None),)}


def _coerce_command_line_strings(config, validator, max_rounds: int = 100) -> None:
    """Turn strings into the numbers, booleans or nulls the schema asks for, in place.

    Snakemake parses ``--config ranking={lam: 0.3}`` with YAML's base loader, so every nested value arrives as a
    string (``'0.3'``). A string is replaced only where the schema wants a scalar type and the string reads as
    exactly that type in YAML (``'0.3'`` → 0.3, ``'true'`` → True); anything else is left for validation to
    report.
    """
    for _ in range(max_rounds):
        changed = False
        for err in _with_sub_errors(validator.iter_errors(config)):  # `oneOf` branches hold their own errors
            if err.validator != "type" or not isinstance(err.instance, str) or not err.absolute_path:
                continue
            wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
            try:
                value = yaml.safe_load(err.instance)
            except yaml.YAMLError:
                continue
            ok = any(isinstance(value, _SCALAR_TYPES.get(t, ())) and not (t != "boolean" and isinstance(value, bool))
                     for t in wanted)
            if not ok:
                continue
            *parents, last = err.absolute_path
            node = config
            for key in parents:
                node = node[key]
            if node[last] == err.instance:  # a sibling branch's error may have converted it already
                node[last] = value
                changed = True
        if not changed:
            return


def _with_sub_errors(errors):
    for err in errors:
        yield err
        yield from _with_sub_errors(err.context or ())


def _short_message(err) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key(s)")
    if err.validator in ("oneOf", "anyOf") and err.context:
        # Each alternative's own complaint says more than "is not valid under any of the given schemas".
        reasons = list(dict.fromkeys(_short_message(e) for e in err.context))
        return f"{err.instance!r} matches none of the allowed forms: " + "; or ".join(reasons)
    return err.message


def _cross_checks(config: Mapping[str, Any]) -> list[str]:
    models, targets = config["models"], config["targets"]
    problems = []

    def need_model(key: str, name: str):
        if name not in models:
            problems.append(f"{key}: model {name!r} is not in `models` (known: {sorted(models)})")

    need_model("toxic_model.init", config["toxic_model"]["init"])
    for i, b in enumerate(config["rewrite"]["bases"]):
        need_model(f"rewrite.bases[{i}]", b)
    need_model("ranking.embedder", config["ranking"]["embedder"])
    need_model("evaluation.perplexity_model", config["evaluation"]["perplexity_model"])
    for name, t in targets.items():
        need_model(f"targets.{name}.model", t["model"])
    for grid_name, grid in config["experiment"].items():
        for i, t in enumerate(grid["targets"]):
            if t not in targets:
                problems.append(f"experiment.{grid_name}.targets[{i}]: target {t!r} is not in `targets` (known: {sorted(targets)})")
        for i, b in enumerate(grid["bases"]):
            if b not in config["rewrite"]["bases"]:
                problems.append(f"experiment.{grid_name}.bases[{i}]: {b!r} is not in rewrite.bases {config['rewrite']['bases']}")
        for i, m in enumerate(grid["methods"]):
            if m not in config["rewrite"]["methods"]:
                problems.append(f"experiment.{grid_name}.methods[{i}]: {m!r} is not in rewrite.methods {config['rewrite']['methods']}")
    ft = config["finetune"]
    if ft["total_batch"] % ft["per_device_batch"]:
        problems.append(f"finetune.total_batch: {ft['total_batch']} is not a multiple of finetune.per_device_batch ({ft['per_device_batch']})")
    for i, s in enumerate(ft["save_steps"]):
        if s > ft["max_steps"]:
            problems.append(f"finetune.save_steps[{i}]: step {s} is beyond finetune.max_steps ({ft['max_steps']})")
    uni = config["systems"]["unidetox"]
    if uni["enabled"] or config["systems"]["gpt2_samples"]["enabled"]:
        need_model("systems.unidetox.model", uni["model"])
        uft = uni["finetune"]
        if uft["total_batch"] % uft["per_device_batch"]:
            problems.append(f"systems.unidetox.finetune.total_batch: {uft['total_batch']} is not a multiple of "
                            f"per_device_batch ({uft['per_device_batch']})")
        for i, s in enumerate(uft["save_steps"]):
            if s > uft["max_steps"]:
                problems.append(f"systems.unidetox.finetune.save_steps[{i}]: step {s} is beyond max_steps "
                                f"({uft['max_steps']})")
    for key, spec in config["systems"].items():
        for i, t in enumerate(spec.get("targets") or ()):
            if t not in targets:
                problems.append(f"systems.{key}.targets[{i}]: target {t!r} is not in `targets` (known: {sorted(targets)})")
    sel = config["selection"]
    if sel["target"] is not None and sel["target"] not in targets:
        problems.append(f"selection.target: target {sel['target']!r} is not in `targets` (known: {sorted(targets)})")
    if sel["preset"]:
        from hspd.systems import all_systems  # (imports this module)

        known = set(all_systems(config)) - {ORIGINAL}
        for name, value in sel["preset"].items():
            if name not in known:
                problems.append(f"selection.preset.{name}: no such system in this config (known: {sorted(known)})")
            for t in (value if isinstance(value, Mapping) else {}):
                if t not in targets:
                    problems.append(f"selection.preset.{name}.{t}: target {t!r} is not in `targets`")
    if config["rewrite"]["k_min"] < 1:
        problems.append("rewrite.k_min: must be ≥ 1")
    problems += _resource_checks(config)
    demo = config.get("demo")
    if demo is not None:
        for name in demo["models"]:
            spec = models.get(name)
            if spec is None or "path" not in spec:
                problems.append(f"demo.models.{name}: a demo model must be in `models` with a local path")
        batch = demo["pretrain"]["batch_size"]
        for key, spec in [("demo.pretrain", demo["pretrain"])] + [(f"demo.models.{n}", m) for n, m in demo["models"].items()]:
            if batch % spec.get("micro_batches", 1):
                problems.append(f"{key}.micro_batches: {spec['micro_batches']} does not divide demo.pretrain.batch_size "
                                f"{batch} (every forward pass takes the same number of texts)")
    return problems


# --------------------------------------------------------------------------------------------------------
# The experiment grid and corpus names
# --------------------------------------------------------------------------------------------------------

def corpus_name(method: str, base: str) -> str:
    """A corpus name says how it was made: ``socd-emd_qwen2.5-3b``."""
    return f"{method}_{base}"


def parse_corpus(name: str) -> tuple[str, str]:
    """``socd-emd_qwen2.5-3b`` → (``socd-emd``, ``qwen2.5-3b``)."""
    match = re.fullmatch(rf"({METHOD_RE})_(.+)", name)
    if match is None:
        raise ConfigError(f"corpus name {name!r} is not of the form <method>_<base> with a method in {list(METHODS)}")
    return match.group(1), match.group(2)


def grid_corpora(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (base, method) the grids need rewritten, plus all rewrite.bases × rewrite.methods (Fig. 3)."""
    pairs: dict[tuple[str, str], None] = {}
    for b in config["rewrite"]["bases"]:
        for m in config["rewrite"]["methods"]:
            pairs[(b, m)] = None
    for grid in config["experiment"].values():
        for b in grid["bases"]:
            for m in grid["methods"]:
                pairs[(b, m)] = None
    return list(pairs)


def rule_resources(config: Mapping[str, Any], rule: str, size: str | None = None) -> dict:
    """A rule's cluster resources, with the ``by_size`` override for ``size`` applied key by key and the
    partition defaulting to ``partitions.gpu`` for a job with GPUs, ``partitions.cpu`` without."""
    res = dict(config["resources"][rule])
    by_size = res.pop("by_size", {}) or {}
    if size is not None and size in by_size:
        res.update(by_size[size])
    res.setdefault("partition", config["partitions"]["gpu" if res["gpu"] > 0 else "cpu"])
    return res


# sbatch flags the SLURM executor sets from the other resource keys: in `slurm_extra` they would contradict them.
MANAGED_SBATCH_FLAGS = re.compile(r"(?<!\S)(--gpus|--gres|--mem|--mem-per-cpu|--partition|-p|--time|-t|"
                                  r"--cpus-per-task|-c|--constraint|-C|--account|-A)(?=[=\s]|$)")


def _resource_checks(config: Mapping[str, Any]) -> list[str]:
    problems = []
    # Rows for sizes no job has are not checked: the demo keeps the paper's 7B rows under its CPU-only values.
    sizes = {config["targets"][t]["size"] for grid in config["experiment"].values() for t in grid["targets"]
             if t in config["targets"]} | {base for base, _ in grid_corpora(config)}
    for rule, res in config["resources"].items():
        variants = {f"resources.{rule}": dict(res, by_size=None)}
        for size, over in (res.get("by_size") or {}).items():
            if size in sizes:
                variants[f"resources.{rule}.by_size.{size}"] = {**res, **over}
        for key, r in variants.items():
            if r.get("gpu_model") and r["gpu"] == 0:
                problems.append(f"{key}.gpu_model: {r['gpu_model']!r} is set but the job asks for no GPU (gpu: 0)")
            flag = MANAGED_SBATCH_FLAGS.search(r.get("slurm_extra") or "")
            if flag:
                problems.append(f"{key}.slurm_extra: {flag.group(1)} is set from the other resource keys (gpu, "
                                f"gpu_model, mem_mb, partition, runtime, cpus, constraint; the account in the "
                                f"profile): use those instead")
    return problems
