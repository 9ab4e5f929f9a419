"""Running snakemake from the tests: as a subprocess, offline, in the checkout or in a copy of it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Jobs (SLURM's included) find this environment's snakemake and python first.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(args, cwd=ROOT, timeout=600, check=True):
    proc = subprocess.run(SNAKEMAKE + args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_repo(work: Path) -> Path:
    """A copy of the repository without results, logs, venv or git, for a run that must not touch the checkout."""
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(
        ".venv", "results", "logs", ".snakemake", ".git", "__pycache__", "*.egg-info", ".pytest_cache"))
    return work


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
