"""`rule_job`: what every rule script runs inside (log redirection, offline mode, thread counts)."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(tmp_path, body: str, resources: str = "None"):
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
                                    params=Params(offline=True), resources={resources})
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


def test_a_job_given_a_gpu_without_usable_cuda_fails_before_its_work(tmp_path):
    proc = run_script(tmp_path, 'log.info("work started")\n', resources='SimpleNamespace(gpu=1, device="auto")')
    assert proc.returncode != 0
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "DeviceError: this job was given 1 GPU(s)" in text and "cannot use CUDA" in text
    assert "set `device: cpu`" in text and "work started" not in text


def test_device_cpu_runs_a_gpu_job_on_cpu_on_purpose(tmp_path):
    proc = run_script(tmp_path, """
        from hspd.models import pick_device
        log.info("picked %s", pick_device("auto"))
    """, resources='SimpleNamespace(gpu=2, device="cpu")')
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "device: cpu (config `device: cpu`)" in text and "picked cpu" in text


@pytest.mark.parametrize("gpus, device, cuda, expected", [
    (0, "auto", False, "cpu"), (0, "auto", True, "cuda"), (1, "cpu", True, "cpu"), (1, "auto", True, "cuda"),
    (0, "cuda", True, "cuda"), (1, "auto", False, "this job was given 1 GPU(s)"),
    (0, "cuda", False, "the config says `device: cuda`"),
])
def test_claim_device(monkeypatch, gpus, device, cuda, expected):
    """What `device="auto"` means after a job claims its device, with CUDA present or not."""
    torch = pytest.importorskip("torch")
    from hspd.errors import DeviceError
    from hspd.jobs import claim_device
    from hspd.models import pick_device, set_auto_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    try:
        if expected not in ("cpu", "cuda"):
            with pytest.raises(DeviceError, match=re.escape(expected)):
                claim_device(gpus, device)
        else:
            claim_device(gpus, device)
            assert pick_device("auto").type == expected
            assert pick_device("cpu").type == "cpu"  # an explicit device is never overridden
    finally:
        set_auto_device("auto")


def test_job_settings_stamp_params_and_input_content(tmp_path):
    """What a rule's resumable output is stamped with: params without batch sizes, inputs by content (a file) or
    by size and time (a file over the hash limit), without the inputs the caller skips."""
    from types import SimpleNamespace

    from snakemake.iocontainers import InputFiles, Params

    from hspd.jobs import file_signature, job_settings

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "texts.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "scorer.ckpt").write_text("x")

    def job(max_new_tokens=20, batch_texts=8, config="{}"):
        (tmp_path / "model" / "config.json").write_text(config)
        inputs = InputFiles([str(tmp_path / "texts.jsonl"), str(tmp_path / "model"), str(tmp_path / "scorer.ckpt")])
        inputs._set_name("texts", 0)
        inputs._set_name("model", 1)
        inputs._set_name("scorer", 2)
        params = Params([max_new_tokens, batch_texts])
        params._set_name("max_new_tokens", 0)
        params._set_name("batch_texts", 1)
        return job_settings(SimpleNamespace(params=params, input=inputs), skip_inputs=("scorer",))

    base = job()
    assert base["params"] == {"max_new_tokens": 20}
    assert set(base["inputs"]) == {str(tmp_path / "texts.jsonl"), str(tmp_path / "model")}
    assert job(batch_texts=64) == base          # a batch size changes no result
    assert job(max_new_tokens=32) != base       # a decoding setting does
    assert job(config='{"n_layer": 2}') != base  # so does another model
    big = file_signature(tmp_path / "texts.jsonl", hash_limit=1)
    assert big[0][0] == "texts.jsonl" and big[0][1][0] == len('{"id": 1}\n')
