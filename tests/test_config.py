"""The config schema and cross-checks: every bad config stops with a message naming the key path."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from hspd import config as cfg
from hspd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper():
    return cfg.load(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def demo():
    return cfg.load(ROOT / "config.yaml", ROOT / "demo" / "demo.yaml")


def test_shipped_configs_are_valid(paper, demo):
    assert paper["rewrite"]["variant"] == "paper"
    assert "demo" in demo and "demo" not in paper


def test_demo_overlay_replaces_sources_by_precedence(demo):
    # The overlay adds `path` to hub entries; the hub id stays for provenance, the path wins when loading.
    from hspd.models import source

    spec = demo["datasets"]["dghs"]
    assert spec["hub"].startswith("LennardZuendorf/") and spec["path"].endswith("dghs.csv")
    src = source(demo["models"]["demo-qwen2-s"], "demo-qwen2-s")
    assert src.kind == "path" and src.ref.endswith("results/demo/models/demo-qwen2-s")


def test_merge_is_deep_and_replaces_lists():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = cfg.merge(base, {"a": {"c": [3]}, "e": 2})
    assert out == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base["a"]["c"] == [1, 2]  # the input is not altered


def _bad(paper, edit):
    c = copy.deepcopy(paper)
    edit(c)
    with pytest.raises(ConfigError) as exc:
        cfg.validate(c)
    return str(exc.value)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["ranking"].__setitem__("lam", 1.5), "ranking.lam: 1.5 is greater than the maximum of 1"),
        (lambda c: c["ranking"].__setitem__("lamda", 0.5), "ranking: unknown key(s) ('lamda' was unexpected)"),
        (lambda c: c.__setitem__("rewrites", {}), "(top level): unknown key(s)"),
        (lambda c: c["rewrite"].__setitem__("methods", ["socd-kl"]), "rewrite.methods[0]: 'socd-kl' is not one of"),
        (lambda c: c["rewrite"].__setitem__("k_min", 0), "rewrite.k_min: 0 is less than the minimum of 1"),
        (lambda c: c["evaluation"].__setitem__("seeds", []), "evaluation.seeds: [] should be non-empty"),
        (lambda c: c["rewrite"].__setitem__("variant", "fast"), "rewrite.variant: 'fast' is not one of ['paper', 'code']"),
        (lambda c: c["finetune"].__setitem__("lr", "3e-5"), "finetune.lr: '3e-5' is not of type 'number'"),
        (lambda c: c["rewrite"].__setitem__("shards", 0), "rewrite.shards: 0 is less than the minimum of 1"),
        (lambda c: c["models"].__setitem__("x", {"hub": "org/x"}),
         "models.x: {'hub': 'org/x'} matches none of the allowed forms: 'path' is a required property; or 'package' "
         "is a required property; or 'revision' is a required property"),
        (lambda c: c["evaluation"]["mmlu"].update(task=None),
         "evaluation.mmlu.task: None is not of type 'string'"),
        (lambda c: c["systems"]["lm_steer"].__setitem__("values", "-1"), "systems.lm_steer.values: '-1' is not of type"),
        (lambda c: c["systems"]["detoxigen"].__setitem__("top_p", 1.5), "systems.detoxigen.top_p: 1.5 is greater"),
        (lambda c: c["models"]["gpt2-xl"].__setitem__("weights", "a"), "models.gpt2-xl:"),
        (lambda c: c["dghs_split"].__setitem__("splits", ["training"]), "dghs_split.splits[0]: 'training' is not one of"),
        (lambda c: c["evaluation"].__setitem__("top_p", 0), "evaluation.top_p: 0 is less than or equal to the minimum of 0"),
        (lambda c: c["toxigen_split"].__setitem__("val_fraction", 1.0), "toxigen_split.val_fraction"),
        (lambda c: c["finetune"]["lora"].__setitem__("enable", True), "finetune.lora: unknown key(s)"),
        (lambda c: c["resources"]["finetune"].__setitem__("gpus", 1), "resources.finetune: unknown key(s)"),
        (lambda c: c.__setitem__("device", "gpu"), "device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
        (lambda c: c["resources"]["finetune"].__setitem__("partition", "gpu queue"), "resources.finetune.partition"),
        (lambda c: c["partitions"].pop("cpu"), "partitions: 'cpu' is a required property"),
        (lambda c: c["evaluation"]["mmlu"].pop("task"), "evaluation.mmlu:"),
        (lambda c: c.pop("targets"), "'targets' is a required property"),
    ],
)
def test_schema_errors_name_the_key(paper, edit, expected):
    assert expected in _bad(paper, edit)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["experiment"]["main"]["targets"].append("gpt-5"),
         "experiment.main.targets[4]: target 'gpt-5' is not in `targets`"),
        (lambda c: c["experiment"]["ablation"]["bases"].append("qwen2.5-72b"),
         "experiment.ablation.bases[3]: 'qwen2.5-72b' is not in rewrite.bases"),
        (lambda c: c["rewrite"]["bases"].append("qwen2.5-72b"),
         "rewrite.bases[3]: model 'qwen2.5-72b' is not in `models`"),
        (lambda c: c["ranking"].__setitem__("embedder", "e5"), "ranking.embedder: model 'e5' is not in `models`"),
        (lambda c: c["finetune"].__setitem__("per_device_batch", 3),
         "finetune.total_batch: 16 is not a multiple of finetune.per_device_batch (3)"),
        (lambda c: c["finetune"].__setitem__("save_steps", [40, 500]), "finetune.save_steps[1]: step 500 is beyond"),
        (lambda c: c["selection"].__setitem__("target", "gpt-5"), "selection.target: target 'gpt-5' is not in"),
        (lambda c: c["selection"]["preset"].__setitem__("ft-unidetox", 3000),
         "selection.preset.ft-unidetox: no such system in this config"),
        (lambda c: c["selection"]["preset"].__setitem__("ft-raw", {"gpt-5": 40}),
         "selection.preset.ft-raw.gpt-5: target 'gpt-5' is not in `targets`"),
        (lambda c: c["systems"]["unidetox"].__setitem__("model", "gpt-5"),
         "systems.unidetox.model: model 'gpt-5' is not in `models`"),
        (lambda c: c["systems"]["unidetox"]["finetune"].__setitem__("save_steps", [1000, 20000]),
         "systems.unidetox.finetune.save_steps[1]: step 20000 is beyond max_steps"),
        (lambda c: c["experiment"]["main"]["methods"].__setitem__(0, "socd-jsd"),
         "experiment.main.methods[0]: 'socd-jsd' is not in rewrite.methods"),
        (lambda c: c["resources"]["rank_candidates"].update(gpu=0, gpu_model="a100"),
         "resources.rank_candidates.gpu_model: 'a100' is set but the job asks for no GPU (gpu: 0)"),
        (lambda c: c["resources"]["finetune"]["by_size"]["7b"].update(gpu=0),
         "resources.finetune.by_size.7b.gpu_model: 'h200' is set but the job asks for no GPU"),
        (lambda c: c["resources"]["mmlu"].update(slurm_extra="--qos=long --gpus=2"),
         "resources.mmlu.slurm_extra: --gpus is set from the other resource keys"),
        (lambda c: c["resources"]["mmlu"].update(slurm_extra="-p big"), "resources.mmlu.slurm_extra: -p is set"),
    ],
)
def test_cross_reference_errors(paper, edit, expected):
    assert expected in _bad(paper, edit)


def test_all_problems_reported_at_once(paper):
    def edit(c):
        c["ranking"]["lam"] = -1
        c["rewrite"]["k_min"] = 0

    msg = _bad(paper, edit)
    assert "ranking.lam" in msg and "rewrite.k_min" in msg


def test_bad_yaml_file_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rewrite: [unclosed\n")
    with pytest.raises(ConfigError, match=str(p)):
        cfg.load(p)
    with pytest.raises(ConfigError, match="not found"):
        cfg.load(tmp_path / "missing.yaml")
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        cfg.load(p)


def test_evaluated_systems_share_jobs(paper):
    from hspd import systems as S

    evaluated = S.evaluated(paper)
    # HSPD: ablation 1 target × 3 bases × 7 methods, main 4 × 1 × 7, of which gpt2-xl × 3B overlaps; each main or
    # ablation target also gets the original, the raw control, UniDetox at two learning rates and GPT-2 samples.
    # … and DExperts, Task Arithmetic, LM-Steer, DetoxiGen and two pre-prompts.
    assert len(evaluated) == (21 + 28 - 7) + 4 * 5 + 4 * 6
    assert len(set(evaluated)) == len(evaluated)
    assert S.Evaluated("gpt2-xl", "original", "base") in evaluated
    assert S.Evaluated("falcon-7b", "ft-socd-emd_qwen2.5-3b", "ft0") in evaluated
    assert S.Evaluated("opt-6.7b", "ft-unidetox-a0.1-lr5e-5", "ft0") in evaluated
    assert S.Evaluated("opt-6.7b", "dexperts", "base") in evaluated
    assert S.Evaluated("llama2-7b", "lm-steer", "base") in evaluated
    assert S.Evaluated("falcon-7b", "detoxigen", "base") in evaluated
    assert S.target_systems(paper, "llama2-7b")[:5] == ["original", "ft-raw", "ft-unidetox-a0.1-lr5e-5",
                                                         "ft-unidetox-a0.1-lr1e-5", "ft-gpt2-samples"]


def test_a_baseline_runs_on_the_targets_its_config_names(paper, demo):
    from hspd import systems as S

    c = copy.deepcopy(paper)
    c["systems"]["dexperts"]["targets"] = ["opt-6.7b"]
    c["systems"]["unidetox"]["targets"] = ["gpt2-xl"]
    cfg.validate(c)
    assert "dexperts" in S.target_systems(c, "opt-6.7b") and "dexperts" not in S.target_systems(c, "gpt2-xl")
    evaluated = S.evaluated(c)
    assert S.Evaluated("opt-6.7b", "dexperts", "base") in evaluated
    assert S.Evaluated("falcon-7b", "dexperts", "base") not in evaluated
    assert S.Evaluated("opt-6.7b", "ft-unidetox-a0.1-lr5e-5", "ft0") not in evaluated
    # The table rows follow; OPT's PPL cap falls back to the released target when UniDetox does not run on it.
    rows = S.table_rows(c, c["experiment"]["main"], ["gpt2-xl", "opt-6.7b"], kinds=("dexperts", "unidetox"))
    assert [(t, n) for t, n, _ in rows] == [("gpt2-xl", "ft-unidetox-a0.1-lr5e-5"), ("gpt2-xl", "ft-unidetox-a0.1-lr1e-5"),
                                            ("opt-6.7b", "dexperts")]
    assert S.cap_references(c, "opt-6.7b") == [("original", "base")]
    assert S.cap_references(c, "gpt2-xl") == [("ft-unidetox-a0.1-lr5e-5", "ft0"), ("ft-unidetox-a0.1-lr1e-5", "ft0")]
    # The demo: the decoding and weight baselines on its GPT2 target only; every target keeps the corpus systems.
    assert S.target_systems(demo, "demo-opt") == ["original", "ft-raw", "ft-unidetox-a0.1-lr0.002",
                                                  "ft-socd-emd_demo-qwen2-m"]
    assert "lm-steer" in S.target_systems(demo, "demo-gpt2")
    # A target that is not in `targets` is named with its key path, before any job.
    c["systems"]["lm_steer"]["targets"] = ["gpt2-xl", "gpt-5"]
    with pytest.raises(ConfigError, match=re.escape("systems.lm_steer.targets[1]: target 'gpt-5' is not in `targets`")):
        cfg.validate(c)
    c["systems"]["lm_steer"]["targets"] = []
    with pytest.raises(ConfigError, match=r"systems\.lm_steer\.targets"):
        cfg.validate(c)


def test_demo_pretraining_micro_batches_must_divide_the_step(demo):
    c = copy.deepcopy(demo)
    assert c["demo"]["models"]["demo-qwen2-m"]["micro_batches"] == 4 and "micro_batches" not in c["demo"]["pretrain"]
    c["demo"]["pretrain"]["micro_batches"] = 3
    with pytest.raises(ConfigError, match=re.escape("demo.pretrain.micro_batches: 3 does not divide "
                                                    "demo.pretrain.batch_size 16")):
        cfg.validate(c)
    c["demo"]["pretrain"]["micro_batches"] = 2
    c["demo"]["models"]["demo-opt"]["micro_batches"] = 5
    with pytest.raises(ConfigError, match=re.escape("demo.models.demo-opt.micro_batches: 5 does not divide")):
        cfg.validate(c)
    c["demo"]["models"]["demo-opt"]["micro_batches"] = 0
    with pytest.raises(ConfigError, match=r"demo\.models\.demo-opt\.micro_batches"):
        cfg.validate(c)
    del c["demo"]["models"]["demo-opt"]["micro_batches"]
    cfg.validate(c)


def test_system_names_round_trip(paper):
    from hspd import systems as S

    assert S.hspd_system("socd-emd_l2", "qwen2.5-3b") == "ft-socd-emd_l2_qwen2.5-3b"
    assert S.parse_hspd_system("ft-socd-emd_l2_qwen2.5-3b") == ("socd-emd_l2", "qwen2.5-3b")
    assert S.parse_hspd_system("ft-raw") is None and S.parse_hspd_system("original") is None
    assert S.unidetox_system(0.05, 5e-5) == "ft-unidetox-a0.05-lr5e-5"
    assert S.format_number(2000) == "2000" and S.format_number(1e-5) == "1e-5"
    assert S.parse_setting("ft3-step120") == (3, 120) and S.parse_setting("ft0") == (0, None)
    assert S.parse_setting("base") == (None, None)
    assert S.parse_setting("beta0.5") == (None, None) and S.setting_value("lam0.04") == ("lam", 0.04)
    # LM-Steer detoxifies with negative steer values; DetoxiGen's α.
    assert S.setting_value("eps-1.1") == ("eps", -1.1) and S.setting_value("alpha3") == ("alpha", 3.0)
    steer = S.get_system(paper, "lm-steer")
    assert S.value_setting(steer, -0.3) == "eps-0.3" and steer.trained_part == "lm_steer"
    assert S.setting_value("beta1-2") is None and S.setting_value("eps--1") is None
    assert S.setting_value("ft0") is None
    with pytest.raises(ConfigError, match="setting 'step40' is not"):
        S.parse_setting("step40")
    with pytest.raises(ConfigError, match="unknown system 'ft-nope'"):
        S.get_system(cfg.load(ROOT / "config.yaml"), "ft-nope")


def test_selection_plans(paper):
    """GPT2-XL sweeps every fine-tuned system; the other targets take its choice; a preset or a single candidate
    skips the sweep; `selection.target: null` lets every target sweep."""
    from hspd import systems as S

    plan = S.selection_plan(paper, "llama2-7b", "ft-unidetox-a0.1-lr1e-5")
    assert (plan.how, plan.chooser, plan.values[:2]) == ("validation", "gpt2-xl", (1000, 2000))
    assert S.sweeps(paper, "ft-unidetox-a0.1-lr1e-5", "gpt2-xl")
    assert not S.sweeps(paper, "ft-unidetox-a0.1-lr1e-5", "llama2-7b")
    files = S.validation_files(paper, "llama2-7b", "ft-raw", "ft0")
    assert files["toxigen"] == [f"results/eval/val/gpt2-xl/ft-raw/ft0-step{s}/seed42/toxigen.json" for s in (40, 120, 200)]
    preset = {**paper, "selection": {**paper["selection"], "preset": {"ft-gpt2-samples": 2000,
                                                                     "ft-raw": {"opt-6.7b": 120}}}}
    assert S.selection_plan(preset, "falcon-7b", "ft-gpt2-samples").__dict__ == {
        "how": "preset", "chooser": "gpt2-xl", "value": 2000, "values": (), "rule": "steps"}
    assert S.selection_plan(preset, "opt-6.7b", "ft-raw").value == 120
    assert S.selection_plan(preset, "falcon-7b", "ft-raw").how == "validation"
    assert S.validation_files(preset, "gpt2-xl", "ft-gpt2-samples", "ft0") == {"toxigen": [], "perplexity": [], "cap": []}
    single = {**paper, "finetune": {**paper["finetune"], "save_steps": [200]}}
    assert S.selection_plan(single, "gpt2-xl", "ft-raw").__dict__ == {
        "how": "only candidate", "chooser": "gpt2-xl", "value": 200, "values": (), "rule": "steps"}
    own = {**paper, "selection": {**paper["selection"], "target": None}}
    assert S.sweeps(own, "ft-raw", "opt-6.7b") and S.selection_plan(own, "opt-6.7b", "ft-raw").chooser == "opt-6.7b"


def test_swept_systems_choose_per_target_under_the_ppl_cap(paper):
    from hspd import systems as S

    plan = S.selection_plan(paper, "falcon-7b", "dexperts")
    assert (plan.how, plan.chooser, plan.rule, len(plan.values)) == ("validation", "falcon-7b", "ppl_cap", 20)
    files = S.validation_files(paper, "falcon-7b", "task-arithmetic", "base")
    assert files["toxigen"][3] == "results/eval/val/falcon-7b/task-arithmetic/lam0.04/seed42/toxigen.json"
    assert files["cap"] == [f"results/eval/val/falcon-7b/{s}/ft0/perplexity.json"
                            for s in ("ft-unidetox-a0.1-lr5e-5", "ft-unidetox-a0.1-lr1e-5")]
    assert files["perplexity"][3] == "results/eval/val/falcon-7b/task-arithmetic/lam0.04/perplexity.json"
    assert len(files["toxigen"]) == len(files["perplexity"]) * len(paper["selection"]["seeds"])
    table6 = {**paper, "selection": {**paper["selection"], "preset": {"dexperts": {"falcon-7b": 1.5}}}}
    assert S.selection_plan(table6, "falcon-7b", "dexperts").value == 1.5
    assert S.selection_plan(table6, "opt-6.7b", "dexperts").how == "validation"
    no_uni = {**paper, "systems": {**paper["systems"], "unidetox": {**paper["systems"]["unidetox"], "enabled": False}}}
    assert S.cap_references(no_uni, "opt-6.7b") == [("original", "base")]
    assert S.get_system(paper, "preprompt-short").prefix.startswith("Generate text that is respectful")


def test_no_selection_reads_a_test_file(paper, demo):
    """Every selection of both configs reads validation runs only."""
    from hspd import systems as S

    for config in (paper, demo):
        for e in S.evaluated(config):
            if e.system == "original" or e.system.startswith("preprompt"):
                continue
            files = S.validation_files(config, e.target, e.system, e.setting)
            for f in files["toxigen"] + files["perplexity"] + files["cap"]:
                assert f.startswith("results/eval/val/") and "test" not in f, f


def test_corpus_names_round_trip():
    assert cfg.parse_corpus(cfg.corpus_name("socd-emd_l2", "qwen2.5-3b")) == ("socd-emd_l2", "qwen2.5-3b")
    with pytest.raises(ConfigError):
        cfg.parse_corpus("nounderscore")


def test_extra_sbatch_flags_that_do_not_clash_are_accepted(paper):
    c = copy.deepcopy(paper)
    c["resources"]["mmlu"]["slurm_extra"] = "--qos=long --mail-type=FAIL --exclusive"
    cfg.validate(c)


def test_partition_follows_the_gpu_count_unless_set(paper):
    assert cfg.rule_resources(paper, "finetune", "7b")["partition"] == "gpu"
    assert cfg.rule_resources(paper, "aggregate")["partition"] == "cpu"
    c = copy.deepcopy(paper)
    c["partitions"] = {"gpu": "a100", "cpu": "short"}
    c["resources"]["mmlu"]["partition"] = "h100"
    assert cfg.rule_resources(c, "finetune")["partition"] == "a100"
    assert cfg.rule_resources(c, "report")["partition"] == "short"
    assert cfg.rule_resources(c, "mmlu", "7b")["partition"] == "h100"


def test_rule_resources_by_size(paper):
    assert cfg.rule_resources(paper, "finetune", "7b")["gpu_model"] == "h200"
    assert "gpu_model" not in cfg.rule_resources(paper, "finetune", "xl")
    assert cfg.rule_resources(paper, "finetune", "7b")["mem_mb"] == 128000
    assert cfg.rule_resources(paper, "finetune", "xl")["mem_mb"] == 64000
    assert cfg.rule_resources(paper, "finetune", "7b")["gpu"] == 1
    assert "by_size" not in cfg.rule_resources(paper, "finetune")


def test_schema_file_is_the_one_loaded():
    schema = yaml.safe_load(cfg.SCHEMA_PATH.read_text())
    assert schema["additionalProperties"] is False


def test_schema_methods_match_the_library():
    schema = yaml.safe_load(cfg.SCHEMA_PATH.read_text())
    assert tuple(schema["definitions"]["method"]["enum"]) == cfg.METHODS


def test_command_line_strings_become_the_types_the_schema_wants(paper):
    # `snakemake --config ranking={lam: 0.3}` hands nested values over as strings.
    c = copy.deepcopy(paper)
    c["ranking"]["lam"] = "0.3"
    c["finetune"]["seeds"] = ["1", "2"]
    c["evaluation"]["unidetox_compat"] = "true"
    c["evaluation"]["mmlu"]["limit"] = "null"
    cfg.validate(c)
    assert c["ranking"]["lam"] == 0.3 and c["finetune"]["seeds"] == [1, 2]
    assert c["evaluation"]["unidetox_compat"] is True and c["evaluation"]["mmlu"]["limit"] is None
    # Strings that do not read as the wanted type still fail, naming the key.
    c["ranking"]["lam"] = "high"
    with pytest.raises(ConfigError, match=r"ranking\.lam: 'high' is not of type 'number'"):
        cfg.validate(c)
    c["ranking"]["lam"] = "2.5"  # coerced, then out of range
    with pytest.raises(ConfigError, match=r"ranking\.lam: 2\.5 is greater than the maximum of 1"):
        cfg.validate(c)
    # A string where a string belongs is left alone.
    c["ranking"]["lam"] = 0.5
    c["models"]["gpt2-xl"]["revision"] = "123"
    cfg.validate(c)
    assert c["models"]["gpt2-xl"]["revision"] == "123"


def test_readme_cluster_table_is_the_config(paper):
    """README's per-rule resource table says what `--profile slurm` asks for: a row per rule and size row."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"\| `(\w+)`(?: \([^)]*\))?(?:, (\S+))? \| (\w+) \| (\d+)(?: × (\w+))? \| (\d+) \| "
                                   r"(\d+) GB \| (\d+) min \|$", line)
        if m:
            rule, size, partition, gpu, model, cpus, mem, minutes = m.groups()
            rows[(rule, size)] = (partition, int(gpu), model, int(cpus), int(mem), int(minutes))
    expected = {}
    for rule, res in paper["resources"].items():
        for size in [None, *(res.get("by_size") or {})]:
            r = cfg.rule_resources(paper, rule, size)
            expected[(rule, size)] = (r["partition"], r["gpu"], r.get("gpu_model"), r["cpus"], r["mem_mb"] // 1000,
                                      r["runtime"])
    assert rows == expected
