"""The start-up of a workflow job that does nothing: the floor every job of a run pays before its work.

Runs Snakemake (``--cores 1``, one job at a time) on a throw-away workflow whose one rule runs a script under
``hspd.jobs.rule_job``, as every rule script does, in three kinds, ``--repeats`` jobs each:

- ``empty``: Python, Snakemake's script preamble and ``rule_job``, nothing else (the bookkeeping rules);
- ``torch``: and ``import torch, transformers`` (what a rule that trains or scores pays first);
- ``model``: and a tokenizer and causal LM loaded through ``hspd.models`` (every generation, perplexity or MMLU
  job): transformers imports its modelling stack on the first ``from_pretrained``, most of the cost.

It prints each kind's mean and minimum seconds from the jobs' ``benchmark:`` files (the script's process, start to
exit). Run: ``python benchmarks/bench_startup.py [--model DIR] [--repeats 4]``; without ``--model`` it saves the
tests' tiny GPT2 (random weights: load cost, not size, is what is measured). A run of N jobs that load a model
spends at least N × the ``model`` floor before any work; on 2 cores, half that in wall time.

``--imports`` says where the ``model`` floor goes: ``python -X importtime`` of a process that loads the model,
reduced to the cumulative import time of the modules in ``WATCH`` (torch, transformers, and the parts of
transformers' modelling stack that a tiny model's load pays for, among them ``torch.distributed.tensor`` and
``torch._dynamo``), beside the process's wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("empty", "torch", "model")

SNAKEFILE = """\
rule all:
    input: expand("out/{{kind}}/{{i}}.txt", kind={kinds!r}, i=range({repeats}))

rule job:
    output: "out/{{kind}}/{{i}}.txt"
    log: "logs/{{kind}}/{{i}}.log"
    params: model={model!r}
    benchmark: "bench/{{kind}}/{{i}}.tsv"
    script: "job.py"
"""

SCRIPT = """\
from hspd.jobs import rule_job

with rule_job(snakemake):
    kind = snakemake.wildcards.kind
    if kind in ("torch", "model"):
        import torch, transformers
    if kind == "model":
        from hspd.models import load_causal_lm, load_tokenizer

        spec = {"path": snakemake.params.model}
        tokenizer = load_tokenizer(spec, "model")
        model = load_causal_lm(spec, "model")
    open(snakemake.output[0], "w").write(kind)
"""


def write_workflow(work: Path, model_dir: str, repeats: int, kinds=KINDS) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "Snakefile").write_text(SNAKEFILE.format(kinds=list(kinds), repeats=repeats, model=str(model_dir)))
    (work / "job.py").write_text(SCRIPT)


def summarise(bench_dir: str | Path) -> dict[str, dict[str, float]]:
    """{kind: {"jobs", "mean_s", "min_s"}} from ``bench_dir/<kind>/<i>.tsv`` (Snakemake benchmark files)."""
    import pandas as pd

    out = {}
    for kind_dir in sorted(p for p in Path(bench_dir).iterdir() if p.is_dir()):
        seconds = pd.concat([pd.read_csv(f, sep="\t")["s"] for f in sorted(kind_dir.glob("*.tsv"))])
        out[kind_dir.name] = {"jobs": len(seconds), "mean_s": float(seconds.mean()), "min_s": float(seconds.min())}
    return out


def save_tiny_model(path: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import _tiny_eval

    _tiny_eval.gpt2().save_pretrained(path)
    _tiny_eval.tokenizer().save_pretrained(path)
    return path


# The modules a model load imports first, each with what it imports in turn (seen with -X importtime on a tiny
# GPT2): torch's core, transformers' own, then its modelling stack's layers, activations (hub kernels, which
# import torch.distributed.tensor) and torch._dynamo (imported by the decorators of generation's code).
WATCH = ("pandas", "torch", "transformers", "transformers.configuration_utils", "transformers.modeling_layers",
         "transformers.activations", "torch.distributed.tensor", "torch._dynamo")

LOAD = """\
from hspd.models import load_causal_lm, load_tokenizer
spec = {{"path": {model!r}}}
load_tokenizer(spec, "model")
load_causal_lm(spec, "model")
"""


def offline_env(**extra) -> dict[str, str]:
    """This process's environment for a measured child: the project's sources first, the hub offline."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)


def import_times(importtime_log: str, modules=WATCH) -> dict[str, float]:
    """{module: cumulative seconds} of the ``modules`` that ``python -X importtime`` reports, in their order.

    A line reads ``import time: <self µs> | <cumulative µs> | <indent><module>``; a module appears once, at its
    first import, and its cumulative time includes every module it imported first."""
    found = {}
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        if name.strip() in modules and cumulative.strip().isdigit():
            found[name.strip()] = int(cumulative) / 1e6
    return {m: found[m] for m in modules if m in found}


def profile_imports(model: str | Path) -> tuple[float, dict[str, float]]:
    """(wall seconds, ``import_times``) of one process that loads ``model`` under ``python -X importtime``."""
    import time

    env = offline_env(OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", LOAD.format(model=str(model))], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"loading {model} failed:\n{proc.stderr[-3000:]}")
    return wall, import_times(proc.stderr)


def run(work: Path, cores: int = 1) -> None:
    env = offline_env()
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(snakemake), "--cores", str(cores), "--quiet", "all"], cwd=work, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed in {work}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local causal-LM folder (default: the tests' tiny GPT2)")
    parser.add_argument("--repeats", type=int, default=4, help="jobs of each kind")
    parser.add_argument("--imports", action="store_true", help="where the model floor goes, by imported module")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hspd-startup-") as tmp:
        model = args.model or save_tiny_model(Path(tmp) / "model")
        if args.imports:
            wall, times = profile_imports(model)
            print(f"| module (cumulative import) | s |\n|---|---:|\n| whole process, model loaded | {wall:.2f} |")
            for name, seconds in times.items():
                print(f"| {name} | {seconds:.2f} |")
            return
        work = Path(tmp) / "wf"
        write_workflow(work, model, args.repeats)
        run(work)
        table = summarise(work / "bench")
    print("| job kind | jobs | mean s | min s |\n|---|---:|---:|---:|")
    for kind in KINDS:
        row = table[kind]
        print(f"| {kind} | {row['jobs']} | {row['mean_s']:.2f} | {row['min_s']:.2f} |")


if __name__ == "__main__":
    main()
