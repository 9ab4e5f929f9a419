"""The workflow itself: lint, the paper's DAG planned offline, and the demo run end to end in a copy of the repo.

These run snakemake as a subprocess. The end-to-end demo takes minutes on 2 cores; it is what `make demo`
does, in a temporary copy so the checkout's own results/ are never touched.
"""

import re

import pytest

from _snake import ROOT, copy_repo, job_counts, run

pytestmark = pytest.mark.workflow


def test_lint_is_clean_for_both_configs():
    run(["--lint"])
    run(["--profile", "demo", "--lint"])


def test_paper_dag_plans_offline():
    proc = run(["-n", "--quiet", "rules"])
    counts = job_counts(proc.stdout + proc.stderr)
    # 3 bases × 7 methods × 16 shards of candidates, one ranking per (base, method).
    assert counts["rewrite_candidates"] == 3 * 7 * 16
    assert counts["rank_candidates"] == 3 * 7
    # 42 HSPD systems (21 ablation + 28 main − 7 shared) + 4 targets × (raw, UniDetox × 2 lr, GPT-2 samples).
    assert counts["finetune"] == 42 + 4 * 4
    # … and per target DExperts, Task Arithmetic, LM-Steer, DetoxiGen and the two pre-prompts, on the released weights.
    n_test = 42 + 4 * 4 + 4 + 4 * 6
    assert counts["mmlu"] == n_test
    # Step sweeps on GPT2-XL only (22 systems × 3 HSPD steps + 3 × 10 UniDetox steps); β, λ, ε (20 each) and α (6)
    # per target; each target's two UniDetox settings on validation (their PPL caps the sweeps); one validation seed.
    n_val = 22 * 3 + 3 * 10 + 4 * (20 + 20 + 20 + 6) + 4 * 2
    assert counts["toxigen_eval"] == n_test * 5 + n_val
    assert counts["perplexity"] == n_test + n_val  # one per evaluated model, all its seeds (one on validation)
    assert "toxigen_score" not in counts and "diversity" not in counts  # one job per (model, seed) samples and scores
    assert counts["select_value"] == 42 + 4 * 4 + 4 * 4
    assert counts["distill"] == 2 * 4 and counts["distilled_corpus"] == 2
    assert counts["train_toxic_lm"] == 1 + 4  # UniDetox's toxic GPT2-XL, each target's toxic version
    assert counts["train_treatment"] == 2 * 4  # LM-Steer's matrix and DetoxiGen's soft prompt per target
    assert counts["train_toxic"] == counts["dghs_split"] == counts["aggregate"] == 1
    assert "demo_corpus" not in counts


def planned_jobs(output: str) -> list[tuple[str, list[str], list[str]]]:
    """(rule, inputs, outputs) of every job in a dry run's log."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \S+:\n)", output):
        m = re.match(r"(?:local)?rule (\S+):\n", block)
        if not m:
            continue
        files = {k: v.split(", ") for k, v in re.findall(r"^    (input|output): (.*)$", block, flags=re.M)}
        jobs.append((m.group(1), files.get("input", []), files.get("output", [])))
    return jobs


def test_slurm_profile_plans_the_paper_without_conda():
    """`--profile slurm` runs jobs in the current environment unless `--sdm conda` is asked for, so planning
    needs no conda (this machine has none); every job carries its partition."""
    proc = run(["--profile", "slurm", "-n"])
    out = proc.stdout + proc.stderr
    assert "Error running conda info" not in out
    assert "slurm_partition=gpu" in out and "slurm_partition=cpu" in out
    assert "gpu_model=h200" in out  # the 7B full fine-tunes ask for a GPU they fit on


def test_conda_environments_pin_the_tested_stack():
    """The `--sdm conda` path: every rule names an env file, and each pins what requirements.txt pins (torch as
    the CUDA build of the same release, with the index it comes from)."""
    import yaml

    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict))
        for spec in pip:
            if "==" in spec:
                name, version = spec.split("==")
                if name == "torch":
                    assert version.split("+")[0] == pins["torch"].split("+")[0], env
                    cuda = version.split("+")[1]
                    assert f"--extra-index-url https://download.pytorch.org/whl/{cuda}" in pip, env
                else:
                    assert pins.get(name) == version, (env.name, name, version, pins.get(name))
    rules = 0
    for smk in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            if re.match(r"\s*rule \w+:", block) and not re.match(r"\s*rule all:", block):
                rules += 1
                assert re.search(r"\n\s+conda:\n\s+ENV_(TORCH|DATA|REPORT)\n", block), block[:80]
    assert rules >= 20  # every rule file was read


def test_selection_reads_validation_runs_only():
    """In the planned demo DAG, nothing upstream of a selection is a test-split prompt file or test result: its
    inputs are validation runs, and theirs the validation prompts."""
    proc = run(["--profile", "demo", "-n", "--forceall"])
    jobs = planned_jobs(proc.stdout + proc.stderr)
    producer = {out: (rule, inputs) for rule, inputs, outputs in jobs for out in outputs}
    selections = [inputs for rule, inputs, _ in jobs if rule == "select_value"]
    assert selections and any(i.startswith("results/eval/val/") for s in selections for i in s)
    seen, stack = set(), [i for s in selections for i in s]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        assert "results/eval/test/" not in path and path != "results/data/toxigen_test.jsonl", path
        stack += producer.get(path, (None, []))[1]
    assert "results/data/toxigen_val.jsonl" in seen


def test_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ranking: {lam: 2.0}\n")
    proc = run(["-n", "--configfile", "config.yaml", str(bad)], check=False)
    assert proc.returncode != 0
    assert "ranking.lam: 2.0 is greater than the maximum of 1" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo, end to end, in a copy of the repository (no results, no venv)."""
    work = copy_repo(tmp_path_factory.mktemp("demo") / "repo")
    # CI has 90 min in all; the demo takes 26–30 min on 2 cores.
    proc = run(["--profile", "demo", "--cores", "2"], cwd=work, timeout=5000)
    return work, proc


@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    work, _ = demo_run
    for rel in ["results/tables/table1.md", "results/tables/table3.md", "results/figures/fig2_divergences.png",
                "results/figures/fig3_direct_toxicity.png", "results/figures/ppl_vs_tp.png",
                "results/metrics/summary.csv", "results/direct_toxicity/direct_toxicity.csv"]:
        assert (work / rel).stat().st_size > 0, rel


@pytest.mark.slow
def test_demo_rewriting_lowers_direct_toxicity(demo_run):
    import pandas as pd

    work, _ = demo_run
    table = pd.read_csv(work / "results/direct_toxicity/direct_toxicity.csv").set_index("corpus")
    raw = table.loc["raw", "toxicity"]
    for corpus in table.index:
        if corpus.startswith(("socd-", "cd_")):
            assert table.loc[corpus, "toxicity"] < raw, (corpus, table.loc[corpus, "toxicity"], raw)


@pytest.mark.slow
def test_demo_finetuning_on_rewritten_text_lowers_toxicity(demo_run):
    """The paper's direction in miniature (SPEC §8): every target fine-tuned on a rewritten corpus (HSPD) is less
    toxic than the same target before (EMT ID, the mean over prompts of the most toxic of its 10 continuations),
    TP ID falls clearly on average, and the raw-text control is more toxic than HSPD for every target. TP per
    target is a count over 36 prompts, too coarse to assert one by one."""
    import pandas as pd

    work, _ = demo_run
    summary = pd.read_csv(work / "results/metrics/summary.csv")
    original = summary[summary["system"] == "original"].set_index("target")
    tuned = summary[summary["system"].str.match(r"ft-(socd|cd|prompt)")]
    raw = summary[summary["system"] == "ft-raw"].set_index("target")
    assert set(tuned["target"]) == set(original.index) == set(raw.index) and len(tuned) >= 4
    for row in tuned.itertuples():
        assert row.emt_id_mean < original.loc[row.target, "emt_id_mean"], (row.target, row.system, row.emt_id_mean)
        assert row.tp_id_mean < raw.loc[row.target, "tp_id_mean"], (row.target, row.system, row.tp_id_mean)
    # The raw-text control: fine-tuning on the toxic texts themselves makes every target more toxic.
    assert (raw["tp_id_mean"] > original.loc[raw.index, "tp_id_mean"]).all(), raw["tp_id_mean"]
    drop = original["tp_id_mean"].mean() - tuned.groupby("target")["tp_id_mean"].mean().mean()
    assert drop > 0.15, (drop, summary[["target", "system", "tp_id_mean"]])


@pytest.mark.slow
def test_demo_tables_hold_every_system(demo_run):
    import pandas as pd

    work, _ = demo_run
    t1 = pd.read_csv(work / "results/tables/table1.csv")
    # The demo runs the decoding and weight baselines and GPT-2 samples on its GPT2 target only (demo/demo.yaml).
    baselines = ["GPT-2 samples", "DExperts (anti-expert)", "Task Arithmetic", "LM-Steer", "DetoxiGen",
                 "pre-prompt (short)", "pre-prompt (long)"]
    for target in ("demo-gpt2", "demo-llama", "demo-opt", "demo-falcon"):
        systems = t1.loc[t1["Target"] == target, "System"].tolist()
        assert systems[:3] == ["original", "raw control", "UniDetox (α 0.1, lr 0.002)"], systems
        assert systems[3:-1] == (baselines if target == "demo-gpt2" else []), systems
        assert systems[-1].startswith("HSPD socd-emd"), systems
    assert "**" in (work / "results/tables/table1.md").read_text()
    uni = pd.read_csv(work / "results/tables/unidetox.csv")
    assert set(uni["System"]) == {"original", "UniDetox (α 0.1, lr 0.002)", "GPT-2 samples", "DExperts (anti-expert)",
                                  "LM-Steer", "DetoxiGen", "Task Arithmetic", "pre-prompt (short)",
                                  "pre-prompt (long)"}
    # Steps chosen on demo-gpt2's validation runs and applied to every target; β, λ, ε, α chosen from the demo's
    # grids.
    runs = pd.read_csv(work / "results/metrics/runs.csv")
    steps = runs[runs["system"].str.startswith("ft-")].groupby("system")["chosen"].nunique()
    assert (steps == 1).all(), steps
    grids = {"dexperts": {0.5, 2.0}, "task-arithmetic": {0.1, 0.5}, "lm-steer": {-1.0, -3.0}, "detoxigen": {1.0, 3.0}}
    swept = runs[runs["system"].isin(list(grids))]
    assert len(swept) == len(grids) * 2, swept  # the GPT2 target, both evaluation seeds
    assert all(row.chosen in grids[row.system] for row in swept.itertuples()), swept
    for fig in ("validation_sweep.png", "validation_ppl_tp.png"):
        assert (work / "results/figures" / fig).stat().st_size > 1000


@pytest.mark.slow
def test_changing_lambda_reruns_ranking_not_decoding(demo_run):
    work, _ = demo_run
    proc = run(["--profile", "demo", "-n", "--quiet", "rules", "--config", "ranking={lam: 0.3}"], cwd=work)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("rank_candidates", 0) > 0
    assert "rewrite_candidates" not in counts and "train_toxic" not in counts


@pytest.mark.slow
def test_demo_rerun_is_a_no_op(demo_run):
    work, _ = demo_run
    proc = run(["--profile", "demo", "-n"], cwd=work)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_inference_batch_sizes_invalidate_nothing(demo_run):
    """Batch sizes of decoding, scoring, perplexity and MMLU change no result (each has a batch-invariance test),
    so they reach the jobs as resources, which Snakemake does not compare, and a finished run stays finished."""
    work, _ = demo_run
    proc = run(["--profile", "demo", "-n", "--config", "ranking={batch_size: 3}", "rewrite={batch_texts: 1}",
                "systems={unidetox: {batch_texts: 1}}",
                "evaluation={batch_prompts: 1, ppl_batch_size: 1, mmlu: {batch_size: 1}}"], cwd=work)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = run(["--profile", "demo", "-n", "-R", "rank_candidates", "--config", "ranking={batch_size: 3}"], cwd=work)
    assert "batch_size=3" in proc.stdout + proc.stderr  # the job still receives it


def test_every_rule_declares_the_library_modules_its_script_imports():
    """A rule's `lib(...)` names every hspd module its script imports (lib() adds what those import in turn), so
    an edit of any module its results depend on reruns it."""
    from hspd.deps import closure, direct_imports

    checked = 0
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:local)?rule )", smk.read_text()):
            rule = re.match(r"(?:local)?rule (\w+):", block)
            script = re.search(r'script:\s*\n\s*"\.\./(.*?)"', block)
            if not rule or not script:
                continue
            libs = re.search(r"lib\(([^)]*)\)", block)
            assert libs, f"rule {rule.group(1)} declares no library modules"
            declared = {"io", "errors", "jobs", *(m.replace("/", ".") for m in re.findall(r'"([a-z_/]+)"', libs.group(1)))}
            imported = direct_imports(ROOT / script.group(1))
            assert imported <= declared, f"rule {rule.group(1)}: lib() lacks {sorted(imported - declared)}"
            assert set(closure(tuple(imported))) <= set(closure(tuple(declared)))
            checked += 1
    assert checked >= 19  # every rule with a script


def test_library_closure_follows_imports_inside_functions():
    from hspd.deps import closure, direct_imports

    assert "socd" in direct_imports(ROOT / "src/hspd/baselines.py")  # imported inside a function
    assert closure(("plots",)) == ("config", "errors", "plots", "systems")
    assert set(closure(("treatments",))) >= {"treatments", "systems", "selection", "baselines", "models", "decoding"}
    with pytest.raises(ValueError, match="no library module 'nope'"):
        closure(("nope",))
