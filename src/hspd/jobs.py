"""What every rule script does around its one library call: logging into the rule's log, offline mode,
thread count, and a provenance record. Scripts in ``workflow/scripts/`` stay a few lines long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

log = logging.getLogger("hspd")


@contextlib.contextmanager
def rule_job(snakemake, *, offline: bool | None = None):
    """Redirect stdout/stderr (tqdm included) to the rule's log, set offline variables and threads.

    Yields a ``logging.Logger`` writing to the log. File-descriptor level redirection also captures what C
    extensions and subprocesses print. On an exception the traceback goes to the log and the job fails.
    """
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    if offline is None:
        offline = bool(snakemake.params.get("offline", True)) if hasattr(snakemake.params, "get") else True
    from hspd.models import set_offline

    set_offline(offline)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    saved = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_path, "a", buffering=1, encoding="utf-8")
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2), sys.stdout, sys.stderr)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    threads = int(getattr(snakemake, "threads", 1) or 1)
    # Thread counts for torch's and numpy's pools, read when they are first imported: rules that never load a
    # model do not pay torch's import (~2 s) just to set them.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    start = time.time()
    log.info("rule %s, threads %d, host %s", getattr(snakemake, "rule", "?"), threads, platform.node())
    try:
        resources = getattr(snakemake, "resources", None)
        device = claim_device(getattr(resources, "gpu", 0) or 0, getattr(resources, "device", "auto") or "auto")
        log.info("device: %s", device)
        yield log
        log.info("done in %.1f s", time.time() - start)
    except Exception:
        log.exception("failed after %.1f s", time.time() - start)
        raise
    finally:
        if saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sys.stdout, sys.stderr = saved[2], saved[3]


def claim_device(gpus: int, device: str = "auto") -> str:
    """Pin the device this job computes on, before any model loads; returns its description.

    ``device`` is the config's: ``cpu`` computes on CPU whatever the job was given (the demo, CI's fake GPUs);
    ``cuda``, or ``auto`` for a job given GPUs (``gpus`` > 0), must be able to use CUDA: if torch cannot, the
    job fails here, in seconds, rather than running for its whole time limit on the node's CPU. ``auto``
    without GPUs takes CUDA if present.
    """
    from hspd.errors import DeviceError
    from hspd.models import set_auto_device

    if device == "cpu":
        set_auto_device("cpu")
        return "cpu (config `device: cpu`)"
    if device == "auto" and gpus <= 0:
        set_auto_device("auto")
        return "auto (no GPU asked for: CUDA if present, else CPU)"
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CPU build" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU (driver missing or "
               f"too old for this CUDA, or no device visible)")
        asked = f"this job was given {gpus} GPU(s)" if gpus > 0 else "the config says `device: cuda`"
        raise DeviceError(f"{asked} (CUDA_VISIBLE_DEVICES={visible!r}) but cannot use CUDA: {why}. Install a CUDA "
                       f"build of torch in the jobs' environment (README: cluster), or set `device: cpu` in the "
                       f"config to run on CPU on purpose.")
    set_auto_device("cuda")
    return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"


def file_signature(path, hash_limit: int = 16 << 20) -> list:
    """What identifies an input's content cheaply: the SHA-256 of each file up to ``hash_limit`` bytes, the size
    and modification time of larger ones (model weights), over a folder's files in sorted order."""
    from hspd.io import file_sha256

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for f in files:
        st = f.stat()
        name = f.name if f == path else str(f.relative_to(path))
        out.append([name, file_sha256(f) if st.st_size <= hash_limit else [st.st_size, st.st_mtime_ns]])
    return out


def job_settings(snakemake, ignore=("batch", "offline"), skip_inputs=()) -> dict:
    """The settings a rule's resumable output is made with: its params (without those whose name contains one of
    ``ignore``: batch sizes and the offline switch change no result) and the content signature of each input (without the named inputs
    ``skip_inputs``, e.g. a scorer that reads the output later). A partial file made with other settings is
    discarded (``hspd.io.ResumableJsonl``), so a changed setting, model or library module never mixes into it."""
    from hspd.io import _plain

    params = {k: _plain(v) for k, v in snakemake.params.items() if not any(word in k for word in ignore)}
    named = [getattr(snakemake.input, key, None) or [] for key in skip_inputs]
    skipped = {str(f) for files in named for f in ([files] if isinstance(files, str) else files)}
    inputs = {str(p): file_signature(p) for p in snakemake.input if str(p) not in skipped and Path(p).exists()}
    return {"params": params, "inputs": inputs}


def environment() -> dict:
    """Versions of what the results depend on, for provenance records."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "tokenizers", "peft", "detoxify", "sentence-transformers", "lm_eval", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out
