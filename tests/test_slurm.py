"""CI's SLURM run: a slice of the demo DAG through `--profile slurm` on a real one-node SLURM cluster on
localhost (tests/slurm/cluster.sh: Debian's slurmctld, slurmd and munge, two fake GPUs), with the CI overlay
profile (status from squeue, short polling) and config (tests/slurm/ci.yaml: shrunk sizes, GPU-tagged rules).

Checks that every job completes, that what SLURM was asked for (`scontrol show job`) is what the config
declares for each rule, that a second run has nothing to do, that λ reruns ranking only, and that a job given a
GPU it cannot use fails at once. `make test` installs SLURM where it can (root with apt-get); elsewhere these
tests are skipped with the reason. The cluster is started once and stopped when the session ends, also on
failure.
"""

import re
import shutil
import subprocess
import time

import pytest

from _snake import ROOT, copy_repo, job_counts, run

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

CLUSTER = ROOT / "tests/slurm/cluster.sh"
CONFIGS = ["config.yaml", "demo/demo.yaml", "tests/slurm/ci.yaml"]
TARGET = "results/corpora/demo-qwen2-s/socd-emd.jsonl"
# Targets first: --configfiles, --set-resources and --quiet take every following word as theirs.
SLURM = ["--profile", "slurm", "--workflow-profile", "tests/slurm/profile"]


@pytest.fixture(scope="session")
def cluster():
    if shutil.which("sinfo") is None or shutil.which("slurmctld") is None:
        why = subprocess.run(["bash", CLUSTER, "check"], capture_output=True, text=True).stdout.strip()
        pytest.skip(f"SLURM is not installed here ({why or 'make test installs it as root with apt-get'}): "
                    f"the SLURM run is skipped")
    up = subprocess.run(["bash", CLUSTER, "up"], capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        subprocess.run(["bash", CLUSTER, "down"], capture_output=True, timeout=120)
        pytest.fail(f"the local SLURM cluster did not start:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    try:
        yield
    finally:
        subprocess.run(["bash", CLUSTER, "down"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("slurm") / "repo")
    start = time.time()
    proc = run([*SLURM, TARGET, "--configfiles", *CONFIGS], cwd=work, timeout=900)
    return work, proc.stdout + proc.stderr, time.time() - start


def submitted_jobs(output: str) -> dict[str, str]:
    """SLURM job id → rule, from snakemake's "submitted with SLURM jobid N (log: …/slurm_logs/rule_<rule>/…)"."""
    return dict(re.findall(r"SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", output))


def scontrol(jobid: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


def test_every_job_completes_with_the_resources_its_rule_declares(slurm_run):
    from hspd.config import load, rule_resources

    work, output, seconds = slurm_run
    config = load(*(work / c for c in CONFIGS))
    jobs = submitted_jobs(output)
    rules = sorted(set(jobs.values()))
    assert {"demo_corpus", "demo_pretrain", "dghs_split", "train_toxic", "rewrite_candidates",
            "rank_candidates"} <= set(rules), rules
    table = []
    for jobid, rule in jobs.items():
        job = scontrol(jobid)
        want = rule_resources(config, "demo" if rule.startswith("demo_") else rule)
        gpus = job.get("TresPerJob", "")
        got = {"state": job["JobState"], "partition": job["Partition"], "runtime": minutes(job["TimeLimit"]),
               "mem_mb": int(job["MinMemoryNode"].rstrip("M")), "cpus": int(job["NumCPUs"]),
               "gpu": int(gpus.rsplit(":", 1)[1]) if gpus else 0,
               "gpu_model": gpus.split(":")[2] if gpus.count(":") == 3 else None,
               "constraint": None if job["Features"] == "(null)" else job["Features"], "nice": int(job["Nice"])}
        expected = {"state": "COMPLETED", "partition": want["partition"], "runtime": want["runtime"],
                    "mem_mb": want["mem_mb"], "cpus": 1 if rule.startswith("demo_") else want["cpus"],
                    "gpu": want["gpu"], "gpu_model": want.get("gpu_model"), "constraint": want.get("constraint"),
                    "nice": int(re.search(r"--nice=(\d+)", want.get("slurm_extra") or "--nice=0").group(1))}
        assert got == expected, (rule, jobid, got, expected)
        table.append((rule, got))
    # At least one job of each kind: GPU by count, GPU by GRES type, a constraint, extra flags, CPU partition.
    assert any(g["gpu"] and not g["gpu_model"] for _, g in table) and any(g["gpu_model"] for _, g in table)
    assert any(g["constraint"] for _, g in table) and any(g["nice"] for _, g in table)
    assert {g["partition"] for _, g in table} == {"cpu", "gpu"}
    print(f"\nSLURM run: {len(jobs)} jobs in {seconds:.0f} s")
    for rule, g in sorted(table, key=lambda x: x[0]):
        print(f"  {rule:20s} {g}")


def test_a_second_run_has_nothing_to_do(slurm_run):
    work, _, _ = slurm_run
    proc = run([*SLURM, TARGET, "--configfiles", *CONFIGS], cwd=work)
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out and "submitted with SLURM jobid" not in out


def test_changing_lambda_reruns_ranking_only(slurm_run):
    work, _, _ = slurm_run
    proc = run([*SLURM, TARGET, "-n", "--quiet", "rules", "--configfiles", *CONFIGS, "--config", "ranking={lam: 0.3}"],
               cwd=work)
    assert job_counts(proc.stdout + proc.stderr) == {"rank_candidates": 1}


def test_a_job_given_a_gpu_it_cannot_use_fails_at_once(slurm_run):
    """With `device: auto`, the ranking job given a (fake) GPU stops before loading anything, saying why.
    (Last in this module: the failed job's outputs are gone afterwards.)"""
    work, _, _ = slurm_run
    start = time.time()
    proc = run([*SLURM, TARGET, "-R", "rank_candidates", "--set-resources", "rank_candidates:gpu=1",
                "--configfiles", *CONFIGS, "--config", "device=auto"], cwd=work, check=False)
    assert proc.returncode != 0
    log = (work / "logs/rank_candidates/demo-qwen2-s/socd-emd.log").read_text()
    assert "this job was given 1 GPU(s)" in log and "cannot use CUDA" in log and "device: cpu" in log, log[-2000:]
    assert "loading" not in log.split("this job was given")[0].lower()
    print(f"\nfailed in {time.time() - start:.0f} s, job included")
