"""`rule_job`: what every rule script runs inside (log redirection, offline mode, thread counts)."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(tmp_path, body: str):
    """Run ``body`` inside ``rule_job`` with a stand-in for the snakemake object, in a fresh interpreter (the
    job redirects file descriptors 1 and 2, which would swallow pytest's own output)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from types import SimpleNamespace
        from hspd.jobs import rule_job

        class Params(dict):
            __getattr__ = dict.get

        snakemake = SimpleNamespace(log=[{str(tmp_path / "logs" / "job.log")!r}], threads=3, rule="demo_rule",
                                    params=Params(offline=True))
        with rule_job(snakemake) as log:
        """) + textwrap.indent(textwrap.dedent(body), "    "))
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS"):
        env.pop(var, None)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


def test_rule_job_logs_output_sets_offline_and_threads(tmp_path):
    proc = run_script(tmp_path, """
        print("from print")
        os.system("echo from a subprocess")
        log.info("offline=%s omp=%s torch_loaded=%s", os.environ["HF_HUB_OFFLINE"], os.environ["OMP_NUM_THREADS"],
                 "torch" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "rule demo_rule, threads 3" in text
    assert "from print" in text and "from a subprocess" in text
    assert "offline=1 omp=3 torch_loaded=False" in text  # a rule that loads no model never imports torch
    assert "done in" in text
    assert proc.stdout == ""  # everything went to the log


def test_rule_job_puts_the_traceback_in_the_log_and_fails(tmp_path):
    proc = run_script(tmp_path, 'raise ValueError("bad row 7 in corpus.jsonl")\n')
    assert proc.returncode != 0
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "failed after" in text and "ValueError: bad row 7 in corpus.jsonl" in text
