"""One generation engine for rewriting: the base model and, when the method needs it, the toxic model decode
in lockstep, each with its own KV cache, over many candidate rows at once.

How a batch runs (``DualModelDecoder.generate``):

- **Prefill once per prompt.** The batch's distinct prompts are left-padded and run once per model; the caches
  and last logits are then gathered to the candidate rows (``Cache.batch_select_indices`` with repeated
  indices), so 18 candidates of a text cost one prompt pass, not 18.
- **Lockstep decoding.** Each step feeds every live row's new token to both models (own cache, shared attention
  mask and position ids), combines the logits (``hspd.socd.Combiner``), and samples.
- **Per-row randomness.** Row ``r`` draws one uniform per step from a counter-based stream keyed by
  ``row_seed(seed, text id, candidate)`` and samples by inverse CDF, so a candidate is the same alone, in any
  batch and in any shard.
- **Stops.** A row ends at EOS or when its decoded text contains a stop string (checked only when the new
  token could complete one), or at ``max_new_tokens`` ("length"). Finished rows are dropped from the batch at
  once, caches included (about a third faster than keeping them when rows stop at different lengths).
- **Sampling order.** ``paper``: combine → temperature. ``code`` (the released code): repetition penalty →
  combine → temperature → top-k → top-p, with the settings of the base model's ``generation_config``.

Only the first ``len(tokenizer)`` logit columns are ever sampled (Qwen pads its embedding matrix).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from hspd.errors import ConfigError, ModelError

log = logging.getLogger("hspd")

_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------------------------
# Sampling settings
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    """Filters applied around the combiner. The defaults (``paper``) are plain temperature sampling."""

    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be ≥ 1 or None, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0.0:
            raise ConfigError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def filters(self) -> bool:
        return self.top_k is not None or self.top_p < 1.0


def sampling_config(model, variant: str) -> SamplingConfig:
    """The sampling filters of a variant: none for ``paper``; for ``code``, the base model's
    ``generation_config`` (Qwen2.5-Instruct: top-k 20, top-p 0.8, repetition penalty 1.05; unset means off)."""
    from hspd.socd import check_variant

    if check_variant(variant) == "paper":
        return SamplingConfig()
    gen = getattr(model, "generation_config", None)
    top_k = getattr(gen, "top_k", None)
    top_p = getattr(gen, "top_p", None)
    penalty = getattr(gen, "repetition_penalty", None)
    return SamplingConfig(top_k=int(top_k) if top_k else None, top_p=float(top_p) if top_p is not None else 1.0,
                          repetition_penalty=float(penalty) if penalty is not None else 1.0)


# --------------------------------------------------------------------------------------------------------------
# Per-row random streams
# --------------------------------------------------------------------------------------------------------------


def row_seed(seed: int, text_id: Any, candidate: int) -> int:
    """A 64-bit key for one candidate's random stream, from (seed, text id, candidate index) only."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{text_id}\x1f{int(candidate)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def row_uniforms(seeds: Sequence[int], n_steps: int):
    """Uniforms in [0, 1) for each row and step, ``[rows, n_steps]`` float64 (CPU).

    SplitMix64 over the counter ``seed + (step + 1) · γ``: row ``r`` at step ``t`` gets the same number whatever
    the other rows, the batch size or ``n_steps``.
    """
    import numpy as np
    import torch

    state = np.asarray([s & _MASK64 for s in seeds], dtype=np.uint64)[:, None]
    steps = np.arange(1, n_steps + 1, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = state + steps * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)))


# --------------------------------------------------------------------------------------------------------------
# Logit processing and sampling (tensors in, tensors out)
# --------------------------------------------------------------------------------------------------------------


def apply_repetition_penalty(logits, seen, penalty: float):
    """HF's repetition penalty on the tokens already in a row (prompt and generation, never padding):
    positive logits are divided by ``penalty``, negative ones multiplied. ``logits`` ``[rows, V]`` float,
    ``seen`` ``[rows, V]`` bool."""
    import torch

    if penalty == 1.0:
        return logits
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def filter_top_k_top_p(logits, top_k: int | None, top_p: float):
    """The tokens HF's top-k then top-p warpers keep, as ``(values, indices)`` ``[rows, K]``, best first; the
    dropped ones among the ``K`` have value ``−inf``.

    Top-k keeps every token tied with the k-th value (as HF does). Top-p drops a token when the probability
    mass of the tokens ranked above it already reaches ``top_p``, keeping at least one.
    """
    import torch

    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        keep_n = int((logits >= kth).sum(-1).max())
        values, indices = torch.topk(logits, keep_n, dim=-1)
        values = values.masked_fill(values < kth, -math.inf)
    else:
        values, indices = torch.sort(logits, dim=-1, descending=True)
    if top_p < 1.0:
        probs = torch.softmax(values, dim=-1)
        mass_above = probs.cumsum(-1) - probs
        drop = mass_above >= top_p
        drop[:, 0] = False
        values = values.masked_fill(drop, -math.inf)
    return values, indices


_BLOCK = 512  # inverse-CDF sampling works on block sums, then inside one block: no [rows, V] float64 cumsum


def inverse_cdf(probs, uniform):
    """Index ``i`` with ``cdf[i-1] ≤ u · total < cdf[i]`` per row: a draw from unnormalised ``probs``.

    ``probs`` ``[rows, n]`` (≥ 0), ``uniform`` ``[rows]`` float64 in [0, 1). Two levels, so that no ``[rows, n]``
    float64 cumulative sum is needed: block sums pick the block, a cumulative sum inside the block picks the
    token. Never returns a zero-probability index."""
    import torch

    rows, n = probs.shape
    u = uniform.to(torch.float64)[:, None]
    if n <= 2 * _BLOCK:  # small supports (top-k candidates, tests): one cumulative sum
        cdf = probs.double().cumsum(-1)
        j = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
        return torch.minimum(j, _last_positive(probs)).squeeze(1)
    n_full = n // _BLOCK
    # Block sums over a strided view: no reshape copy of the [rows, n] tensor.
    blocks = probs.as_strided((rows, n_full, _BLOCK), (probs.stride(0), _BLOCK * probs.stride(1), probs.stride(1)))
    sums = [blocks.sum(-1)]
    if n_full * _BLOCK < n:
        sums.append(probs[:, n_full * _BLOCK:].sum(-1, keepdim=True))
    block_cdf = torch.cat(sums, dim=1).double().cumsum(-1)
    target = u * block_cdf[:, -1:]
    block = torch.searchsorted(block_cdf, target, right=True).clamp_max(block_cdf.shape[1] - 1)
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp_min(0)), 0.0)
    offsets = block * _BLOCK + torch.arange(_BLOCK, device=probs.device)
    inside = probs.gather(1, offsets.clamp_max(n - 1)).double().masked_fill_(offsets >= n, 0.0)
    j = torch.searchsorted(inside.cumsum(-1), target - before, right=True)
    # Block sums (float32) and the in-block cumulative sum (float64) round differently: if that pushed the target
    # past the block's last positive entry, take that entry.
    return (block * _BLOCK + torch.minimum(j, _last_positive(inside))).squeeze(1)


def _last_positive(probs):
    """Column of the last positive entry per row, ``[rows, 1]``."""
    import torch

    n = probs.shape[-1]
    return n - 1 - torch.argmax((probs > 0).flip(-1).int(), dim=-1, keepdim=True)


def sample_tokens(logits, temperature, uniform, sampling: SamplingConfig = SamplingConfig(), *,
                  overwrite: bool = False):
    """Draw one token per row.

    Args:
        logits: ``[rows, V]`` float32 after the combiner (``−inf`` = impossible).
        temperature: ``[rows]``; ``0`` means greedy (argmax).
        uniform: ``[rows]`` float64 in [0, 1), the row's number for this step.
        sampling: top-k / top-p after temperature.
        overwrite: ``logits`` may be used as scratch (the decoder's own tensor).

    Returns:
        ``[rows]`` int64 token ids.
    """
    import torch

    greedy = temperature <= 0
    any_greedy = bool(greedy.any())
    best = logits.argmax(-1) if any_greedy else None
    inv_tau = torch.where(greedy, 1.0, 1.0 / temperature.clamp_min(1e-6)).to(logits.dtype)[:, None]
    scaled = logits.mul_(inv_tau) if overwrite else logits * inv_tau
    if sampling.filters:
        values, indices = filter_top_k_top_p(scaled, sampling.top_k, sampling.top_p)
        pick = inverse_cdf(torch.softmax(values, dim=-1), uniform)
        sampled = indices.gather(1, pick[:, None]).squeeze(1)
    else:
        # Unnormalised exp(x − max), in place: inverse_cdf needs no normalisation.
        sampled = inverse_cdf(scaled.sub_(scaled.amax(-1, keepdim=True)).exp_(), uniform)
    return torch.where(greedy, best, sampled) if any_greedy else sampled


# --------------------------------------------------------------------------------------------------------------
# KV cache with room to grow
# --------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _preallocated_layer_class():
    import torch
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer whose keys/values live in a buffer sized for the whole generation: each step writes
        one slot instead of concatenating (which copies the whole cache every step)."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states, value_states):
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self._k = torch.empty(b, h, self.capacity, d, dtype=key_states.dtype, device=key_states.device)
            self._v = torch.empty(b, value_states.shape[1], self.capacity, value_states.shape[-1],
                                  dtype=value_states.dtype, device=value_states.device)
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            if self.length + n > self.capacity:
                raise ModelError(f"KV cache of {self.capacity} positions is full")
            self._k[:, :, self.length:self.length + n] = key_states
            self._v[:, :, self.length:self.length + n] = value_states
            self.length += n
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def reset(self) -> None:
            self.length = 0
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("the decoder never crops its caches")

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self.batch_select_indices(torch.arange(self._k.shape[0], device=self._k.device)
                                          .repeat_interleave(repeats))

        def batch_select_indices(self, indices) -> None:
            if self.is_initialized:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys = self._k[:, :, : self.length]
                self.values = self._v[:, :, : self.length]

    return PreallocatedLayer


def new_cache(capacity: int):
    """An empty transformers ``Cache`` whose layers hold ``capacity`` positions without reallocating."""
    from transformers.cache_utils import Cache

    return Cache(layer_class_to_replicate=functools.partial(_preallocated_layer_class(), capacity))


# --------------------------------------------------------------------------------------------------------------
# Checks before decoding
# --------------------------------------------------------------------------------------------------------------


def logit_width(model) -> int:
    """The number of logit columns a causal LM produces (its output embedding rows)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def check_models(base_model, toxic_model, tokenizer, *, needs_toxic: bool, toxic_tokenizer=None,
                 base_name: str = "base model", toxic_name: str = "toxic model") -> int:
    """Check that the models can decode together; return the vocabulary size ``V``.

    Raises ``ModelError`` when the method needs a toxic model and none is given, when the toxic tokenizer
    differs from the base one, when a model's logits are narrower than the tokenizer, or when the models sit on
    different devices.
    """
    from hspd.models import check_same_tokenizer

    vocab = len(tokenizer)
    if base_model is None:
        raise ModelError(f"no {base_name} was given")
    if needs_toxic and toxic_model is None:
        raise ModelError(f"this method needs a toxic model, and none was given (next to {base_name})")
    if needs_toxic and toxic_tokenizer is not None:
        check_same_tokenizer(tokenizer, toxic_tokenizer, base_name, toxic_name)
    for name, model in ((base_name, base_model), (toxic_name, toxic_model if needs_toxic else None)):
        if model is not None and logit_width(model) < vocab:
            raise ModelError(f"{name} produces {logit_width(model)} logits per token but the tokenizer has {vocab} "
                             "tokens: the model and the tokenizer do not belong together")
    if needs_toxic and _device(base_model) != _device(toxic_model):
        raise ModelError(f"{base_name} is on {_device(base_model)} but {toxic_name} on {_device(toxic_model)}")
    return vocab


def _device(model):
    return next(model.parameters()).device


def eos_ids(tokenizer, *models) -> tuple[int, ...]:
    """EOS ids of the tokenizer and of the models' generation configs (Qwen2.5-Instruct ends with either
    ``<|im_end|>`` or ``<|endoftext|>``)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for model in models:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is not None:
            ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return tuple(sorted(ids))


# --------------------------------------------------------------------------------------------------------------
# Stop strings
# --------------------------------------------------------------------------------------------------------------


class StopStrings:
    """Decides whether a row's generation has produced a stop string.

    A stop string can only complete on a token whose text contains its last character (or a partial UTF-8
    byte, decoded as U+FFFD): the decoded text of the row is checked only after such tokens.
    """

    def __init__(self, tokenizer, stop_strings: Sequence[str]):
        import torch

        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        vocab = len(tokenizer)
        flags = torch.zeros(vocab, dtype=torch.bool)
        if self.stop_strings:
            ends = {s[-1] for s in self.stop_strings} | {"\ufffd"}
            pieces = tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
            flags = torch.tensor([any(c in piece for c in ends) for piece in pieces], dtype=torch.bool)
        self.may_complete = flags  # [V] on CPU

    def text(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def hit(self, token_ids: Sequence[int]) -> bool:
        text = self.text(token_ids)
        return any(s in text for s in self.stop_strings)


# --------------------------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One candidate to generate: which prompt, at which temperature, with which random stream."""

    prompt: int
    temperature: float
    seed: int


@dataclass
class RowOutput:
    """A finished candidate.

    Attributes:
        token_ids: every generated token, the final EOS included.
        text: the decoded generation without EOS and special tokens.
        finish: ``"stop"`` (stop string), ``"eos"`` or ``"length"`` (``max_new_tokens`` reached).
        mean_alpha, mean_k: SoCD's α and k averaged over the row's steps; ``None`` for other methods.
    """

    token_ids: list[int]
    text: str
    finish: str
    mean_alpha: float | None = None
    mean_k: float | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids``, each ``[n, max_len]`` int64; positions
    count real tokens only, so a padded prompt sees the same positions as alone."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids, mask, positions


class DualModelDecoder:
    """Generates candidate rows from a base model and, for contrastive methods, a toxic model in lockstep.

    Args:
        base_model: a causal LM in eval mode.
        toxic_model: the toxic LM (same tokenizer), or ``None`` for methods that do not need it.
        tokenizer: the shared tokenizer; ``len(tokenizer)`` is ``V``.
        combiner: a ``hspd.socd.Combiner`` (``prompt``, ``cd``, ``socd-*``).
        max_new_tokens: the token limit of a row; a row that reaches it without stopping ends as "length".
        sampling: filters around the combiner (``sampling_config(base_model, variant)``).
        stop_strings: strings that end a row (``</answer>`` for rewriting).
        eos_token_ids: ids that end a row; default: the tokenizer's and the models' generation configs'.
        ignore_stop: never stop early (benchmarks: every row runs ``max_new_tokens`` steps).
        toxic_tokenizer: if given, checked against ``tokenizer`` (``ModelError`` on any difference).
        compact_fraction: drop finished rows from the batch (caches included) once they are at least this
            fraction of it; 0 drops them at once (fastest in measurements: each drop costs one copy of the caches,
            each kept row a full step of both models and of the ``[rows, V]`` logit work), above 1 never.
    """

    def __init__(self, base_model, toxic_model, tokenizer, combiner, *, max_new_tokens: int,
                 sampling: SamplingConfig | None = None, stop_strings: Sequence[str] = (),
                 eos_token_ids: Iterable[int] | None = None, ignore_stop: bool = False, toxic_tokenizer=None,
                 compact_fraction: float = 0.0):
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        self.vocab = check_models(base_model, toxic_model, tokenizer, needs_toxic=combiner.needs_toxic,
                                  toxic_tokenizer=toxic_tokenizer)
        if combiner.vocab_size not in (None, self.vocab):
            raise ModelError(f"the combiner was built for {combiner.vocab_size} tokens but the tokenizer has "
                             f"{self.vocab}")
        self.base_model = base_model
        self.toxic_model = toxic_model if combiner.needs_toxic else None
        self.tokenizer = tokenizer
        self.combiner = combiner
        self.max_new_tokens = int(max_new_tokens)
        self.sampling = sampling or SamplingConfig()
        self.eos = tuple(eos_ids(tokenizer, base_model, self.toxic_model) if eos_token_ids is None
                         else eos_token_ids)
        self.ignore_stop = ignore_stop
        self.stops = StopStrings(tokenizer, () if ignore_stop else stop_strings)
        self.compact_fraction = compact_fraction
        self.device = _device(base_model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos[0] if self.eos else 0)
        self.pad_id = int(pad)

    def _models(self):
        return [m for m in (self.base_model, self.toxic_model) if m is not None]

    def _forward(self, model, cache, input_ids, attention_mask, position_ids):
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def generate(self, prompts: Sequence[Sequence[int]], rows: Sequence[Row], progress=None) -> list[RowOutput]:
        """Generate every row; ``rows[i].prompt`` indexes ``prompts`` (token ids, no padding).

        Returns one ``RowOutput`` per row, in the order of ``rows``.
        """
        import torch

        if not rows:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ConfigError("an empty prompt cannot be decoded")
        for r in rows:
            if not 0 <= r.prompt < len(prompts):
                raise ConfigError(f"row {r} points at prompt {r.prompt} of {len(prompts)}")
            if not r.temperature >= 0:
                raise ConfigError(f"temperature must be ≥ 0, got {r.temperature}")
        with torch.inference_mode():
            return self._generate(prompts, rows, progress)

    def _prefill(self, prompts, rows):
        """Run each distinct prompt once per model, then gather caches and last logits to the rows.

        Returns ``(caches, logits, attention, next_position, prompt_len)``: ``logits`` one ``[rows, width]`` per
        model, ``attention`` ``[rows, prompt_len + max_new_tokens]`` (ones after the prompt), ``next_position``
        ``[rows]`` the position of each row's first new token."""
        import torch

        dev = self.device
        used = sorted({r.prompt for r in rows})
        slot = {p: i for i, p in enumerate(used)}
        ids, mask, positions = (x.to(dev) for x in left_pad([prompts[p] for p in used], self.pad_id))
        prompt_len = ids.shape[1]
        # A model with positions of its own in front (DetoxiGen's soft prompt) says how many: `cache_extra`.
        caches = [new_cache(prompt_len + self.max_new_tokens + getattr(m, "cache_extra", 0)) for m in self._models()]
        logits = [self._forward(m, c, ids, mask, positions) for m, c in zip(self._models(), caches)]
        select = torch.tensor([slot[r.prompt] for r in rows], device=dev)
        for c in caches:
            c.batch_select_indices(select)  # repeated indices: each candidate row gets its prompt's states
        attention = torch.ones((len(rows), prompt_len + self.max_new_tokens), dtype=torch.long, device=dev)
        attention[:, :prompt_len] = mask[select]
        return caches, [lg[select] for lg in logits], attention, positions[select, -1] + 1, prompt_len

    def _generate(self, prompts, rows, progress):
        import torch

        dev, vocab, steps = self.device, self.vocab, self.max_new_tokens
        caches, logits, attention, next_pos, prompt_len = self._prefill(prompts, rows)
        n_rows = len(rows)
        temperature = torch.tensor([float(r.temperature) for r in rows], dtype=torch.float32, device=dev)
        uniforms = row_uniforms([r.seed for r in rows], steps).to(dev)
        stat_sums = torch.zeros((n_rows, 2), dtype=torch.float64, device=dev)  # Σ α, Σ k over live steps
        live = torch.ones(n_rows, dtype=torch.float64, device=dev)
        penalty = self.sampling.repetition_penalty
        seen = None  # [rows, V]: tokens in the prompt or generated so far, for the repetition penalty
        if penalty != 1.0:
            seen = torch.zeros((n_rows, vocab), dtype=torch.bool, device=dev)
            for i, r in enumerate(rows):
                seen[i, torch.as_tensor(list(prompts[r.prompt]), device=dev)] = True
        eos = torch.tensor(self.eos, dtype=torch.long, device=dev)
        may_complete = self.stops.may_complete.to(dev)

        means: dict[int, tuple[float, float]] = {}
        generated: list[list[int]] = [[] for _ in rows]
        finish: list[str | None] = [None] * n_rows
        present = list(range(n_rows))  # the global row index of each batch row
        n_done_present = 0

        for t in range(steps):
            sb = logits[0]
            if seen is not None:
                sb = apply_repetition_penalty(sb[:, :vocab].float(), seen, penalty)
            # The model outputs are ours: the combiner may write into them instead of copying.
            combined, stats = self.combiner(sb, logits[1] if len(logits) > 1 else None, give_base=True)
            tokens = sample_tokens(combined, temperature, uniforms[:, t], self.sampling, overwrite=True)
            if stats:
                stat_sums[:, 0] += stats["alpha"].double() * live
                stat_sums[:, 1] += stats["k"].double() * live
            if seen is not None:
                seen[torch.arange(len(present), device=dev), tokens] = True

            none = torch.zeros_like(tokens)
            is_eos = torch.isin(tokens, eos).long() if eos.numel() and not self.ignore_stop else none
            check = may_complete[tokens].long() if self.stops.stop_strings else none
            step_info = torch.stack([tokens, is_eos, check], dim=1).tolist()  # the one host sync per step
            newly_done = self._record_step(step_info, present, generated, finish)
            if newly_done:
                live[newly_done] = 0.0
                n_done_present += len(newly_done)
            if progress is not None:
                progress(t)
            if n_done_present == len(present) or t == steps - 1:
                break

            if n_done_present and n_done_present >= self.compact_fraction * len(present):
                # Drop finished rows everywhere (caches included): the per-step [rows, V] work shrinks with them.
                keep_list = [b for b, g in enumerate(present) if finish[g] is None]
                means.update(self._means(stat_sums, present, generated, skip=set(keep_list)))
                keep = torch.tensor(keep_list, device=dev)
                present = [present[b] for b in keep_list]
                for c in caches:
                    c.batch_select_indices(keep)
                tokens, attention, next_pos, temperature, uniforms, stat_sums, live = (
                    x[keep] for x in (tokens, attention, next_pos, temperature, uniforms, stat_sums, live))
                seen = seen[keep] if seen is not None else None
                n_done_present = 0

            step_mask = attention[:, : prompt_len + t + 1]
            step_pos = next_pos[:, None] + t
            logits = [self._forward(m, c, tokens[:, None], step_mask, step_pos) for m, c in zip(self._models(), caches)]

        means.update(self._means(stat_sums, present, generated))
        outputs = []
        for g in range(n_rows):
            done = finish[g] or "length"
            text_ids = generated[g][:-1] if done == "eos" else generated[g]
            alpha, k = means.get(g, (None, None))
            outputs.append(RowOutput(generated[g], self.stops.text(text_ids), done, alpha, k))
        return outputs

    def _record_step(self, step_info, present, generated, finish) -> list[int]:
        """Append each live row's token and mark rows that hit EOS or a stop string; returns their batch rows."""
        newly_done = []
        for b, g in enumerate(present):
            if finish[g] is not None:
                continue
            token, ended, maybe_stop = step_info[b]
            generated[g].append(token)
            if ended:
                finish[g] = "eos"
            elif maybe_stop and self.stops.hit(generated[g]):
                finish[g] = "stop"
            if finish[g] is not None:
                newly_done.append(b)
        return newly_done

    def _means(self, stat_sums, present, generated, skip=()):
        """Per-row means of α and k over the steps each row sampled, for the batch rows not in ``skip``."""
        if self.combiner.kind != "socd":
            return {}
        sums = stat_sums.tolist()
        return {g: (sums[b][0] / len(generated[g]), sums[b][1] / len(generated[g]))
                for b, g in enumerate(present) if b not in skip and generated[g]}


# --------------------------------------------------------------------------------------------------------------
# Out-of-memory back-off
# --------------------------------------------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    """CUDA out-of-memory, as ``torch.cuda.OutOfMemoryError`` or a ``RuntimeError`` saying so."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def batches_with_oom_backoff(items: Sequence, batch_size: int, fn: Callable[[Sequence], Any], *,
                             on_oom: Callable[[int], None] | None = None) -> Iterator[tuple[Sequence, Any]]:
    """Yield ``(chunk, fn(chunk))`` over consecutive chunks of ``items``.

    When ``fn`` runs out of GPU memory the batch size is halved and the same chunk retried; the smaller size is
    kept for the rest (the texts of a corpus are alike). Out of memory at batch size 1 is re-raised, as is any
    other error.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be ≥ 1, got {batch_size}")
    start, size = 0, int(batch_size)
    while start < len(items):
        chunk = items[start:start + size]
        oom = False
        try:
            result = fn(chunk)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM we can retry
            if not is_oom(exc) or size == 1:
                raise
            oom = True
        if oom:
            # Outside the except block, so the traceback (and the tensors its frames hold) is already freed.
            size = max(1, size // 2)
            _free_memory()
            log.warning("out of GPU memory: retrying with batch size %d", size)
            if on_oom is not None:
                on_oom(size)
            continue
        yield chunk, result
        start += len(chunk)


# --------------------------------------------------------------------------------------------------------------
# Decoding units into a resumable file
# --------------------------------------------------------------------------------------------------------------


def describe(combiner) -> dict:
    """A combiner's kind and scalar settings, stable across runs (for a resumable file's settings)."""
    plain = (int, float, str, bool, type(None))
    return {"type": type(combiner).__name__, **{k: v for k, v in sorted(vars(combiner).items())
                                                 if isinstance(v, plain) and not k.startswith("_")}}


def decode_units(units: Sequence, *, output_path, key: str, unit_key: Callable[[Any], Any], batch_size: int,
                 generate: Callable[[Sequence], Any], records: Callable[[Sequence, Any], Iterable[list]],
                 desc: str, settings=None, stale: str = "discard", progress: bool = True):
    """Decode every unit (a text to rewrite, a sample to distil) not yet in ``output_path`` and write it there.

    Units committed to ``<output_path>.partial`` with the same ``settings`` (by ``key``; ``unit_key(unit)`` is a
    unit's value) are skipped; a partial made with other settings is discarded or, with ``stale="error"``, refused
    (``hspd.io.ResumableJsonl``);
    the rest go through ``generate`` in batches of ``batch_size`` (halved on GPU OOM), and ``records(batch,
    outputs)`` gives each unit's records in batch order, each list written whole. Returns the finished path.
    """
    import torch
    from tqdm.auto import tqdm

    from hspd.io import ResumableJsonl

    out = ResumableJsonl(output_path, key=key, settings=settings, stale=stale).open()
    try:
        todo = [u for u in units if unit_key(u) not in out.done]
        if len(todo) < len(units):
            log.info("resuming: %d of %d units already done", len(units) - len(todo), len(units))
        bar = tqdm(total=len(units), initial=len(units) - len(todo), disable=not progress, desc=desc, unit="text")
        for batch, outputs in batches_with_oom_backoff(todo, batch_size, generate):
            for unit, unit_records in zip(batch, records(batch, outputs)):
                out.write_unit(unit_records, unit=unit_key(unit))
                bar.update(1)
        bar.close()
        return out.finalize()
    finally:
        out.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

