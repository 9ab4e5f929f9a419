"""The comparison systems' own algorithms (SPEC §6). UniDetox's distillation lives here; it decodes with the
engine of ``hspd.decoding`` (both models in lockstep, each on its own KV cache), like rewriting.

UniDetox (seed 002) samples text from a prompt that is the single EOS token, scoring each next token by
``log p_base − log p_toxic`` on the base model's plausible head ``V_head = {v : p_base(v) ≥ α · max p_base}``.
Targets fine-tuned on that text become less toxic. GPT-2 samples, its ablation, are plain samples of the base.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from hspd.errors import ConfigError, DataError, ModelError

log = logging.getLogger("hspd")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"UniDetox alpha must lie in (0, 1], got {alpha}")


def unidetox_core(sb, st, *, alpha: float = 0.1):
    """UniDetox's score on float32 ``[batch, V]`` logits (a new tensor)."""
    import torch

    # p_b(v) ≥ α · max p_b is s_b(v) ≥ max s_b + ln α: the normaliser cancels.
    outside = sb < sb.amax(dim=-1, keepdim=True) + math.log(alpha)
    score = torch.log_softmax(sb, dim=-1).sub_(torch.log_softmax(st, dim=-1))
    return score.masked_fill_(outside, -math.inf)


def unidetox_logits(base_logits, toxic_logits, *, alpha: float = 0.1, vocab_size: int | None = None):
    """UniDetox's contrastive score (seed 002, SPEC §6).

    ``s(v) = log p_base(v) − log p_toxic(v)`` for ``v`` in ``V_head = {v : p_base(v) ≥ α · max p_base}``,
    ``−inf`` elsewhere; the next token is sampled from ``softmax(s)``.

    Args:
        base_logits, toxic_logits: ``[batch, width]`` logits of the base and the toxic model (the widths may
            differ when a model pads its embedding matrix; then pass ``vocab_size``).
        alpha: the plausibility threshold (0.1; 0.05 in the paper's ablation).
        vocab_size: ``V``, the shared tokenizer's length; log-probabilities are normalised over the first ``V``
            columns, and columns beyond it are ``−inf``.

    Returns:
        ``[batch, width_base]`` float32 scores.
    """
    from hspd.socd import _pad_width, _vocab_view

    _check_alpha(alpha)
    if toxic_logits is None:
        raise ModelError("UniDetox needs the toxic model's logits")
    sb, st, _ = _vocab_view(base_logits, toxic_logits, vocab_size)
    return _pad_width(unidetox_core(sb, st, alpha=alpha), base_logits.shape[1])


@dataclass(frozen=True)
class UniDetoxCombiner:
    """The decoder's combiner for UniDetox (the interface of ``hspd.socd.Combiner``)."""

    alpha: float = 0.1
    vocab_size: int | None = None
    kind: str = "unidetox"
    needs_toxic: bool = True

    def __post_init__(self):
        _check_alpha(self.alpha)

    def __call__(self, base_logits, toxic_logits=None, *, give_base: bool = False):
        from hspd.socd import _vocab_view

        if toxic_logits is None:
            raise ModelError("UniDetox needs the toxic model's logits")
        sb, st, _ = _vocab_view(base_logits, toxic_logits, self.vocab_size)
        return unidetox_core(sb, st, alpha=self.alpha), {}


def distill_combiner(alpha: float | None, vocab_size: int):
    """UniDetox's combiner for ``alpha``, or plain sampling (GPT-2 samples) for ``None``."""
    if alpha is None:
        from hspd.socd import make_combiner

        return make_combiner("prompt", vocab_size=vocab_size)
    return UniDetoxCombiner(float(alpha), int(vocab_size))


def shard_indices(n_texts: int, shard: int, n_shards: int) -> list[int]:
    """Text indices ``shard, shard + n_shards, …`` below ``n_texts``."""
    if n_texts < 1 or n_shards < 1 or not 0 <= shard < n_shards:
        raise ConfigError(f"shard {shard} of {n_shards} over {n_texts} texts is not a valid split")
    return list(range(shard, n_texts, n_shards))


def distill_shard(*, base_model, toxic_model, tokenizer, alpha: float | None, n_texts: int, shard: int,
                  n_shards: int, max_new_tokens: int = 256, batch_texts: int = 32, seed: int = 0,
                  source: str, output_path: str | os.PathLike, toxic_tokenizer=None, settings=None,
                  progress: bool = True) -> Path:
    """Sample this shard's texts from the EOS prompt and write them to ``output_path`` (JSONL), resumably.

    Text ``i`` draws its random stream from ``(seed, i)`` only, so it is the same in any shard or batch. A row
    ends at EOS or after ``max_new_tokens``. Records: ``id`` (``<source>-<i>``), ``index``, ``text``,
    ``n_tokens``, ``finish``.

    Args:
        alpha: UniDetox's plausibility threshold, or ``None`` for plain samples of ``base_model``.
        toxic_model: the toxic model (ignored for plain samples); ``toxic_tokenizer``, if given, must equal
            ``tokenizer``.
        settings: what else identifies the samples (the models: ``hspd.jobs.job_settings``); a partial file made
            with other settings or arguments is discarded.
    """
    from hspd.decoding import DualModelDecoder, Row, decode_units, row_seed

    indices = shard_indices(n_texts, shard, n_shards)
    if batch_texts < 1:
        raise ConfigError(f"batch_texts must be ≥ 1, got {batch_texts}")
    bos = tokenizer.eos_token_id
    if bos is None:
        raise ModelError("the tokenizer has no EOS token to start UniDetox's samples from")
    combiner = distill_combiner(alpha, len(tokenizer))
    decoder = DualModelDecoder(base_model, toxic_model if alpha is not None else None, tokenizer, combiner,
                               max_new_tokens=max_new_tokens, toxic_tokenizer=toxic_tokenizer)
    log.info("distil %s: %d of %d texts (shard %d/%d), ≤ %d tokens each from EOS (%d)", source, len(indices),
             n_texts, shard, n_shards, max_new_tokens, bos)

    def run(batch):
        return decoder.generate([[int(bos)]], [Row(0, 1.0, row_seed(seed, i, 0)) for i in batch])

    def records(batch, outputs):
        return ([{"id": f"{source}-{i}", "index": i, "text": row.text, "n_tokens": row.n_tokens,
                  "finish": row.finish}] for i, row in zip(batch, outputs))

    return decode_units(indices, output_path=output_path, key="index", unit_key=lambda i: i, batch_size=batch_texts,
                        generate=run, records=records, desc=f"distil {source}", progress=progress,
                        settings={"distill": {"alpha": alpha, "n_texts": n_texts, "shard": shard, "n_shards": n_shards,
                                              "max_new_tokens": max_new_tokens, "seed": seed, "source": source},
                                  **(settings or {})})


def merge_distilled(shards, *, n_texts: int, source: str):
    """The distilled corpus from its shards: every index once, in index order; texts that are empty (the sample
    ended at once) are dropped and counted.

    Returns ``(corpus, report)``: a DataFrame ``id, text, n_tokens, finish`` and a dict of counts."""
    import pandas as pd

    frames = [s for s in shards if len(s)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "index", "text"])
    missing = [c for c in ("id", "index", "text") if c not in df.columns]
    if missing:
        raise DataError(f"distilled {source}: missing column(s) {missing}; found {list(df.columns)}")
    indices = df["index"].tolist()
    if sorted(indices) != list(range(n_texts)):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        absent = sorted(set(range(n_texts)) - set(indices))
        raise DataError(f"distilled {source}: the shards hold {len(indices)} texts for {n_texts} "
                        f"(duplicated {dup[:5]}, missing {absent[:5]})")
    df = df.sort_values("index", kind="stable")
    empty = df["text"].str.strip().eq("")
    kept = df[~empty].drop(columns=["index"]).reset_index(drop=True)
    if kept.empty:
        raise DataError(f"distilled {source}: every one of the {n_texts} samples is empty")
    report = {"source": source, "n_samples": n_texts, "n_texts": len(kept), "n_empty": int(empty.sum()),
              "finish": {k: int(v) for k, v in df["finish"].value_counts().items()} if "finish" in df else {},
              "mean_tokens": float(df["n_tokens"].mean()) if "n_tokens" in df else None}
    return kept, report


# --------------------------------------------------------------------------------------------------------------
# Decoding-time and weight-space baselines (SPEC §6)
# --------------------------------------------------------------------------------------------------------------


def _contrast(method: str, weight_name: str, weight: float, logits, other_logits, other: str, vocab_size):
    """``(1 + w) · log_softmax(logits) − w · log_softmax(other_logits)`` over the first ``V`` columns, float32
    ``[batch, V]``, and the first log-softmax (for a set restricted by it)."""
    import torch

    from hspd.socd import _vocab_view

    if not weight >= 0:
        raise ConfigError(f"{method} {weight_name} must be ≥ 0, got {weight}")
    if other_logits is None:
        raise ModelError(f"{method} needs the {other}'s logits")
    s, so, _ = _vocab_view(logits, other_logits, vocab_size)
    s, so = torch.log_softmax(s, dim=-1), torch.log_softmax(so, dim=-1)
    return s.mul(1.0 + weight).sub_(so, alpha=weight), s


def dexperts_logits(logits, anti_logits, *, beta: float, vocab_size: int | None = None):
    """DExperts with the anti-expert only (Liu et al. 2021, SPEC §6).

    ``(1 + β) · log_softmax(logits) − β · log_softmax(anti_logits)``, the log-softmaxes over the first
    ``vocab_size`` columns; columns beyond it are ``−inf``.

    Args:
        logits: ``[batch, width]`` logits of the target.
        anti_logits: ``[batch, width']`` logits of its toxic version (the anti-expert).
        beta: the anti-expert's weight, ≥ 0 (0 is the target itself).

    Returns:
        ``[batch, width]`` float32 scores.
    """
    from hspd.socd import _pad_width

    score, _ = _contrast("DExperts", "beta", beta, logits, anti_logits, "anti-expert", vocab_size)
    return _pad_width(score, logits.shape[1])


class DExpertsCombiner:
    """The decoder's combiner for DExperts (the interface of ``hspd.socd.Combiner``)."""

    kind = "dexperts"
    needs_toxic = True

    def __init__(self, beta: float, vocab_size: int):
        self.beta, self.vocab_size = float(beta), int(vocab_size)

    def __call__(self, logits, anti_logits=None, *, give_base: bool = False):
        return dexperts_logits(logits, anti_logits, beta=self.beta, vocab_size=self.vocab_size)[:, : self.vocab_size], {}


def top_p_mask(log_probs, top_p: float):
    """``[batch, V]`` bool: the smallest set of most probable tokens whose probability reaches ``top_p`` (the
    most probable token always), from log-probabilities."""
    import torch

    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must lie in (0, 1], got {top_p}")
    if top_p >= 1.0:  # every token (a cumulative sum that rounds to 1 early would drop the tail)
        return torch.ones_like(log_probs, dtype=torch.bool)
    sorted_lp, order = torch.sort(log_probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_lp.exp(), dim=-1) - sorted_lp.exp()  # mass of the more probable tokens
    keep_sorted = before < top_p
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


def detoxigen_logits(gen_logits, det_logits, *, alpha: float, top_p: float = 0.9, vocab_size: int | None = None):
    """DetoxiGen's contrastive score (seed 003, SPEC §6).

    ``s_gen + α (s_gen − s_det)`` with ``s`` the log-softmax over the first ``vocab_size`` columns, on the
    generator's top-p set (the smallest set of most probable tokens whose probability reaches ``top_p``), ``−inf``
    elsewhere and beyond ``vocab_size``. The detoxifier is the same backbone with a soft prompt trained on toxic
    text, so subtracting it steers away from toxicity.

    Returns:
        ``[batch, width_gen]`` float32 scores.
    """

    from hspd.socd import _pad_width

    score, sg = _contrast("DetoxiGen", "alpha", alpha, gen_logits, det_logits, "detoxifier", vocab_size)
    return _pad_width(score.masked_fill_(~top_p_mask(sg, top_p), -math.inf), gen_logits.shape[1])


def task_arithmetic(state, toxic_state, *, lam: float) -> dict:
    """Task Arithmetic's negation (Ilharco et al. 2023, SPEC §6): ``θ − λ (θ_toxic − θ)`` for every
    floating-point tensor; other tensors (integer buffers) are kept from ``state``.

    Args:
        state, toxic_state: state dicts of the target and of its toxic version (same keys and shapes).
        lam: λ ≥ 0 (0 is the target itself).

    Raises DataError naming the first key that is missing from either side or whose shape differs.
    """
    import torch

    if not lam >= 0:
        raise ConfigError(f"Task Arithmetic lambda must be ≥ 0, got {lam}")
    for key in state:
        if key not in toxic_state:
            raise DataError(f"task arithmetic: {key!r} is in the target but not in the toxic model")
        if tuple(state[key].shape) != tuple(toxic_state[key].shape):
            raise DataError(f"task arithmetic: {key!r} has shape {tuple(state[key].shape)} in the target but "
                            f"{tuple(toxic_state[key].shape)} in the toxic model")
    extra = [k for k in toxic_state if k not in state]
    if extra:
        raise DataError(f"task arithmetic: {extra[0]!r} is in the toxic model but not in the target")
    out = {}
    for key, theta in state.items():
        if torch.is_floating_point(theta):
            delta = toxic_state[key].to(theta.dtype) - theta
            out[key] = theta - lam * delta
        else:
            out[key] = theta.clone()
    return out


def sequence_scores(combiner, model, other_model):
    """A two-model system's scores at every position of full sequences, for lm-eval's log-likelihoods:
    ``input_ids [batch, seq]`` → ``combiner(model logits, other logits)`` as ``[batch, seq, width]``.

    ``combiner`` takes ``[rows, width]`` logit pairs (e.g. ``functools.partial(dexperts_logits, beta=1.0,
    vocab_size=V)``); both models see the same ids, no cache."""
    def scores(input_ids):
        a = model(input_ids).logits
        b = other_model(input_ids).logits
        flat = combiner(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
        return flat.reshape(a.shape[0], a.shape[1], -1)

    return scores


# --------------------------------------------------------------------------------------------------------------
# LM-Steer (Han et al. 2024)
# --------------------------------------------------------------------------------------------------------------


def steering_module(d: int, *, epsilon: float, seed: int = 0, init_std: float = 1e-3):
    """LM-Steer's steering matrix ``W`` (``d × d``, initialised N(0, ``init_std``)) and its strength ``ε``.

    Every output word embedding becomes ``e'(v) = e(v) + ε W e(v)``, so the logit ``h · e'(v)`` equals
    ``(h + ε hW) · e(v)`` (``h`` a row vector): the module transforms the head's input instead of the
    vocabulary-sized embedding matrix."""
    import torch

    class Steering(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.weight = torch.nn.Parameter(torch.randn(d, d, generator=g) * init_std)
            self.epsilon = float(epsilon)

        def forward(self, hidden):
            return hidden + self.epsilon * (hidden @ self.weight.to(hidden.dtype))

    return Steering()


def attach_steering(model, steering):
    """Steer ``model``'s output embeddings with ``steering`` (a forward pre-hook on the LM head, so generation,
    perplexity and lm-eval all see the steered model). The module is registered on the model as ``lm_steer``;
    returns the hook handle (``handle.remove()`` detaches it)."""
    head = model.get_output_embeddings()
    if head is None:
        raise ModelError(f"{type(model).__name__} has no output embeddings to steer")
    d = head.weight.shape[1]
    if tuple(steering.weight.shape) != (d, d):
        raise ModelError(f"steering matrix {tuple(steering.weight.shape)} does not fit the model's hidden size {d}")
    model.add_module("lm_steer", steering.to(head.weight.device))
    return head.register_forward_pre_hook(lambda module, args: (steering(args[0]), *args[1:]))


STEERING_FILE = "steering.safetensors"
SOFT_PROMPT_FILE = "soft_prompt.safetensors"


def save_tensor(directory, filename: str, tensor, meta: dict) -> Path:
    """One trained tensor as safetensors (data, never pickled code) with its settings as string metadata."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    save_file({"weight": tensor.detach().float().contiguous().cpu()}, str(path),
              metadata={k: str(v) for k, v in meta.items()})
    return path


def load_tensor(directory, filename: str, what: str):
    """(tensor, metadata) saved by ``save_tensor``; a clear error naming the file when it is missing or broken."""
    from safetensors import safe_open

    path = Path(directory) / filename
    if not path.is_file():
        raise ModelError(f"{path}: no {what} here (made by the workflow's training rule)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("weight"), dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own types for a torn or foreign file
        raise ModelError(f"{path}: not a readable {what}: {err}") from err


def save_steering(steering, directory) -> Path:
    """LM-Steer's matrix ``W`` and the training strength ``ε₀`` it was learned at."""
    return save_tensor(directory, STEERING_FILE, steering.weight, {"train_epsilon": steering.epsilon})


def load_steering(directory, value: float):
    """The steering module at strength ``ε = value · ε₀`` (LM-Steer's steer value times its training ε₀, so
    Table 6's ``−1.1`` is ``ε = −1.1e-3``)."""
    import torch

    weight, meta = load_tensor(directory, STEERING_FILE, "LM-Steer matrix")
    if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
        raise ModelError(f"{directory}/{STEERING_FILE}: a steering matrix is square, got {tuple(weight.shape)}")
    steering = steering_module(weight.shape[0], epsilon=value * float(meta.get("train_epsilon", 1.0)))
    with torch.no_grad():
        steering.weight.copy_(weight)
    return steering.eval()


def train_steering(model, tokenizer, texts, *, epsilon: float = 1e-3, lr: float = 1e-2, batch_size: int = 32,
                   epochs: int = 3, max_length: int = 256, seed: int = 0, progress=True, log=print):
    """Learn LM-Steer's matrix on the toxic texts with every weight of ``model`` frozen (Adam, the causal-LM
    loss, training strength ``epsilon``); returns the trained module (``.weight`` is ``W``)."""
    from hspd.train import train_causal_lm

    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_output_embeddings()
    steering = steering_module(head.weight.shape[1], epsilon=epsilon, seed=seed)
    handle = attach_steering(model, steering)
    try:
        train_causal_lm(model, tokenizer, list(texts), lr=lr, batch_size=batch_size, epochs=epochs,
                        max_length=max_length, seed=seed, select_best=None, progress=progress, log=log)
    finally:
        handle.remove()
        del model.lm_steer
    return steering.eval()


# --------------------------------------------------------------------------------------------------------------
# DetoxiGen (seed 003): one frozen backbone, a soft prompt trained on toxic text makes the detoxifier
# --------------------------------------------------------------------------------------------------------------


def train_soft_prompt(model, tokenizer, texts, *, n_virtual: int = 20, lr: float = 3e-2, batch_size: int = 8,
                      epochs: int = 3, max_length: int = 256, seed: int = 0, progress=True, log=print):
    """Prompt tuning (peft) of ``n_virtual`` soft tokens on the toxic texts, every weight of ``model`` frozen.

    Returns the learned prompt, ``[n_virtual, hidden]`` float32 (detached, on the model's device). ``model`` is
    left as it was (peft's wrapper is removed)."""
    import torch
    from peft import PromptTuningConfig, get_peft_model

    from hspd.train import train_causal_lm

    if n_virtual < 1:
        raise ConfigError(f"n_virtual must be ≥ 1, got {n_virtual}")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_virtual))
    train_causal_lm(peft_model, tokenizer, list(texts), lr=lr, batch_size=batch_size, epochs=epochs,
                    max_length=max_length, seed=seed, select_best=None, progress=progress, log=log)
    prompt = peft_model.get_prompt_embedding_to_save("default").detach().float().clone()
    for p in model.parameters():  # peft froze them; the weights themselves were never updated
        p.requires_grad_(True)
    return prompt.to(device)


def save_soft_prompt(prompt, directory) -> Path:
    """DetoxiGen's soft prompt, ``[n_virtual, hidden]``."""
    return save_tensor(directory, SOFT_PROMPT_FILE, prompt, {"n_virtual": prompt.shape[0]})


def load_soft_prompt(directory, hidden_size: int):
    prompt, _ = load_tensor(directory, SOFT_PROMPT_FILE, "DetoxiGen soft prompt")
    if prompt.ndim != 2 or prompt.shape[1] != hidden_size:
        raise ModelError(f"{directory}/{SOFT_PROMPT_FILE}: a soft prompt of shape {tuple(prompt.shape)} does not fit "
                         f"the target's hidden size {hidden_size}")
    return prompt


class SoftPromptedLM:
    """The detoxifier view of a backbone: ``n`` soft tokens in front of every sequence, the same weights.

    Behaves as a causal LM for ``hspd.decoding.DualModelDecoder`` (``forward`` with its own cache, explicit
    positions and attention mask): on the first call (empty cache) the prompt embeddings are put in front of the
    inputs; on every call the attention mask gets ``n`` ones in front and positions move by ``n``, as in
    training (peft prepends the prompt at positions ``0 … n−1``)."""

    def __init__(self, backbone, prompt):
        self.backbone = backbone
        self.prompt = prompt
        self.n = int(prompt.shape[0])
        self.cache_extra = self.n  # positions the decoder's caches must hold beyond prompt + new tokens
        self.config = backbone.config
        self.generation_config = getattr(backbone, "generation_config", None)

    def parameters(self):
        return self.backbone.parameters()

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def __call__(self, input_ids, *, attention_mask=None, position_ids=None, past_key_values=None, **kwargs):
        import torch

        if past_key_values is None:
            return self._whole(input_ids, attention_mask, **kwargs)
        b = input_ids.shape[0]
        ones = torch.ones((b, self.n), dtype=attention_mask.dtype, device=attention_mask.device)
        attention_mask = torch.cat([ones, attention_mask], dim=1)
        position_ids = position_ids + self.n
        if past_key_values.get_seq_length() == 0:
            embeds = self.backbone.get_input_embeddings()(input_ids)
            prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(b, -1, -1)
            inputs_embeds = torch.cat([prompt, embeds], dim=1)
            steps = torch.arange(self.n, device=position_ids.device).unsqueeze(0).expand(b, -1)
            position_ids = torch.cat([steps, position_ids], dim=1)
            return self.backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 position_ids=position_ids, past_key_values=past_key_values, **kwargs)
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, **kwargs)


    def _whole(self, input_ids, attention_mask=None, **kwargs):
        """Whole sequences without a cache (lm-eval's scores): ``[batch, seq]`` ids → logits ``[batch, seq, V]``
        of the tokens themselves, the prompt's ``n`` positions dropped."""
        import torch

        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones((b, t), dtype=torch.long, device=input_ids.device)
        ones = torch.ones((b, self.n), dtype=attention_mask.dtype, device=attention_mask.device)
        embeds = self.backbone.get_input_embeddings()(input_ids)
        prompt = self.prompt.to(device=embeds.device, dtype=embeds.dtype).unsqueeze(0).expand(b, -1, -1)
        out = self.backbone(inputs_embeds=torch.cat([prompt, embeds], dim=1),
                            attention_mask=torch.cat([ones, attention_mask], dim=1), **kwargs)
        out.logits = out.logits[:, self.n:]
        return out


class DetoxiGenCombiner:
    """The decoder's combiner for DetoxiGen (the interface of ``hspd.socd.Combiner``)."""

    kind = "detoxigen"
    needs_toxic = True

    def __init__(self, alpha: float, top_p: float = 0.9, vocab_size: int | None = None):
        if not alpha >= 0:
            raise ConfigError(f"DetoxiGen alpha must be ≥ 0, got {alpha}")
        self.alpha, self.top_p, self.vocab_size = float(alpha), float(top_p), vocab_size

    def __call__(self, gen_logits, det_logits=None, *, give_base: bool = False):
        out = detoxigen_logits(gen_logits, det_logits, alpha=self.alpha, top_p=self.top_p, vocab_size=self.vocab_size)
        return out[:, : self.vocab_size or out.shape[1]], {}
