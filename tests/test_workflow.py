"""The workflow itself: lint, the paper's DAG planned offline, and the demo run end to end in a copy of the repo.

These run snakemake as a subprocess. The end-to-end demo takes minutes on 2 cores; it is what `make demo`
does, in a temporary copy so the checkout's own results/ are never touched.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}

pytestmark = pytest.mark.workflow


def run(args, cwd=ROOT, timeout=600, check=True):
    proc = subprocess.run(SNAKEMAKE + args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run: rule name → job count."""
    counts = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\S+)\s+(\d+)\s*$", line)
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif m and m.group(1) == "total":
                break
    return counts


def test_lint_is_clean_for_both_configs():
    run(["--lint"])
    run(["--profile", "demo", "--lint"])


def test_paper_dag_plans_offline():
    proc = run(["-n", "--quiet", "rules"])
    counts = job_counts(proc.stdout + proc.stderr)
    # 3 bases × 7 methods × 16 shards of candidates, one ranking per (base, method).
    assert counts["rewrite_candidates"] == 3 * 7 * 16
    assert counts["rank_candidates"] == 3 * 7
    # 42 fine-tuned cells (21 ablation + 28 main − 7 shared) × 1 fine-tuning seed, + 4 originals evaluated.
    assert counts["finetune"] == 42
    assert counts["toxigen_generate"] == (42 + 4) * 5
    assert counts["mmlu"] == 42 + 4
    assert counts["train_toxic"] == counts["dghs_split"] == counts["aggregate"] == 1
    assert "demo_corpus" not in counts


def test_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ranking: {lam: 2.0}\n")
    proc = run(["-n", "--configfile", "config.yaml", str(bad)], check=False)
    assert proc.returncode != 0
    assert "ranking.lam: 2.0 is greater than the maximum of 1" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo, end to end, in a copy of the repository (no results, no venv)."""
    work = tmp_path_factory.mktemp("demo") / "repo"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(
        ".venv", "results", "logs", ".snakemake", ".git", "__pycache__", "*.egg-info", ".pytest_cache"))
    proc = run(["--profile", "demo", "--cores", "2"], cwd=work, timeout=1800)
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
    """The paper's direction in miniature (SPEC §8): every target fine-tuned on a rewritten corpus is less toxic
    than the same target before (EMT ID, the mean over prompts of the most toxic of 25 continuations), and TP ID
    falls clearly on average. TP per target is a count over 36 prompts, too coarse to assert one by one."""
    import pandas as pd

    work, _ = demo_run
    summary = pd.read_csv(work / "results/metrics/summary.csv")
    original = summary[summary["corpus"] == "original"].set_index("target")
    tuned = summary[summary["corpus"] != "original"]
    assert set(tuned["target"]) == set(original.index) and len(tuned) >= 4
    for row in tuned.itertuples():
        assert row.emt_id_mean < original.loc[row.target, "emt_id_mean"], (row.target, row.corpus, row.emt_id_mean)
    drop = original["tp_id_mean"].mean() - tuned.groupby("target")["tp_id_mean"].mean().mean()
    assert drop > 0.15, (drop, summary[["target", "corpus", "tp_id_mean"]])


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
