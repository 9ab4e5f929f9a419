"""Logit combiners for dual-model decoding: Soft Contrastive Decoding (SoCD) and vanilla contrastive decoding
(CD), SPEC §3. Tensors in, tensors out; no models here.

Notation: ``s_b``, ``s_t`` base and toxic logits ``[batch, width]``; ``V`` the shared tokenizer's vocabulary
size. Qwen pads its embedding matrix (151,936 columns for 151,665 tokens), so every combiner works on the first
``V`` columns only and the columns beyond ``V`` come back as ``−inf``: they are never sampled. Everything is
computed in float32, whatever the models' dtype.

SoCD at one step, per row:

1. ``δ = f(p_b, p_t)`` (a divergence from ``hspd.divergences``);
2. ``α = ln(1 + δ) / (1 + ln(1 + δ))``;
3. ``k = clip(ceil(α V), k_min, V / 2)`` (paper) or ``clip(floor(α V), k_min, V)`` (released code);
4. ``d = log p_t − log p_b``; ``I`` = the ``k`` largest entries of ``d`` among those with ``d > 0``;
5. ``s' = s_b − α · 1[i ∈ I] · |s_t|`` (paper) or ``s_b − α · 1[i ∈ I] · s_t`` (code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hspd.divergences import DIVERGENCES, check_divergence
from hspd.errors import ConfigError, ModelError

VARIANTS = ("paper", "code")
METHODS = ("prompt", "cd") + tuple(f"socd-{name}" for name in DIVERGENCES)


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown SoCD variant {variant!r}; choose one of {list(VARIANTS)}")
    return variant


def parse_method(name: str) -> tuple[str, str | None]:
    """Split a rewriting method name into (kind, divergence): ``"socd-emd"`` → ``("socd", "emd")``,
    ``"cd"`` → ``("cd", None)``. An unknown name is a ``ConfigError`` listing the valid ones."""
    if name in ("prompt", "cd"):
        return name, None
    kind, _, div = str(name).partition("-")
    if kind == "socd" and div in DIVERGENCES:
        return "socd", div
    raise ConfigError(f"unknown rewriting method {name!r}; choose one of {list(METHODS)}")


def effective_divergence(divergence: str, variant: str) -> str:
    """The divergence a variant really computes: the released code's "EMD" is the L2 distance."""
    check_divergence(divergence)
    return "emd_l2" if check_variant(variant) == "code" and divergence == "emd" else divergence


def _vocab_view(base_logits, toxic_logits, vocab_size: int | None):
    """The first ``V`` columns of both logit tensors as contiguous float32 ``[batch, V]``, and whether the base
    tensor is a private copy (a dtype change or a strided slice) that may be overwritten."""
    import torch

    if base_logits.dim() != 2:
        raise ModelError(f"base logits must be [batch, width], got shape {tuple(base_logits.shape)}")
    if toxic_logits is not None:
        if toxic_logits.dim() != 2 or toxic_logits.shape[0] != base_logits.shape[0]:
            raise ModelError(f"toxic logits {tuple(toxic_logits.shape)} do not match base logits "
                             f"{tuple(base_logits.shape)} row for row")
        if vocab_size is None and toxic_logits.shape[1] != base_logits.shape[1]:
            raise ModelError(f"base and toxic logits have {base_logits.shape[1]} and {toxic_logits.shape[1]} "
                             "columns: pass vocab_size (the shared tokenizer's length)")
    widths = [base_logits.shape[1]] + ([toxic_logits.shape[1]] if toxic_logits is not None else [])
    vocab = widths[0] if vocab_size is None else int(vocab_size)
    if not 0 < vocab <= min(widths):
        raise ModelError(f"vocab_size {vocab} does not fit logits of width {min(widths)}")
    sb = base_logits[:, :vocab]
    private = sb.dtype != torch.float32 or not sb.is_contiguous()
    sb = sb.float().contiguous()
    st = toxic_logits[:, :vocab].float().contiguous() if toxic_logits is not None else None
    return sb, st, private


def _pad_width(logits, width: int):
    """``[batch, V]`` → ``[batch, width]`` with ``−inf`` in the padded columns."""
    if logits.shape[1] == width:
        return logits
    out = logits.new_full((logits.shape[0], width), -math.inf)
    out[:, : logits.shape[1]] = logits
    return out


def _k_bounds(variant: str, k_min: int, vocab: int) -> tuple[int, int]:
    k_max = vocab // 2 if variant == "paper" else vocab
    if not 1 <= k_min <= k_max:
        raise ConfigError(f"k_min = {k_min} must lie in [1, k_max = {k_max}] for a vocabulary of {vocab} "
                          f"({variant} variant)")
    return k_min, k_max


def socd_core(sb, st, *, divergence: str, variant: str = "paper", k_min: int = 10, overwrite: bool = False):
    """SoCD on contiguous float32 logits that hold exactly the vocabulary's columns.

    Args:
        sb, st: base and toxic logits ``[batch, V]``, float32.
        overwrite: write the result into ``sb`` (a private copy) instead of a new tensor.

    Returns:
        ``(logits [batch, V], alpha [batch], k [batch] int64, selection)`` where ``selection`` is
        ``(indices [batch, w], chosen [batch, w] bool)``: ``I`` is ``indices[chosen]`` row by row
        (``selection_mask`` turns it into a ``[batch, V]`` mask).
    """
    import torch

    vocab = sb.shape[1]
    k_lo, k_hi = _k_bounds(variant, k_min, vocab)
    log_pb = torch.log_softmax(sb, dim=-1)
    log_pt = torch.log_softmax(st, dim=-1)
    delta = DIVERGENCES[effective_divergence(divergence, variant)](log_pb.exp(), log_pt.exp(), log_pb, log_pt)
    log1p_delta = torch.log1p(delta.clamp_min(0.0))
    alpha = log1p_delta / (1.0 + log1p_delta)
    # k in float64: α·V near an integer must round the same way as the formula says, not as float32 does.
    scaled = alpha.double() * vocab
    k = (scaled.ceil() if variant == "paper" else scaled.floor()).clamp(k_lo, k_hi).long()

    d = log_pt.sub_(log_pb)  # d = log p_t − log p_b, in place: log p_t is not needed any more
    del log_pb
    take = torch.minimum(k, torch.count_nonzero(d > 0, dim=-1))  # all positives when fewer than k are positive
    width = int(take.max())  # one host sync; the top-k below needs a static size
    logits = sb if overwrite else sb.clone()
    if width == 0:
        idx = torch.empty((sb.shape[0], 0), dtype=torch.long, device=sb.device)
        chosen = torch.empty((sb.shape[0], 0), dtype=torch.bool, device=sb.device)
    else:
        # One top-k of the largest k in the batch, then a rank mask keeps each row's own k: no loop over rows.
        # An unsorted top-k and a sort of its `width` values cost less than a sorted top-k over the vocabulary.
        values, idx = torch.topk(d, width, dim=-1, sorted=False)
        idx = idx.gather(1, values.argsort(dim=-1, descending=True, stable=True))
        chosen = torch.arange(width, device=d.device) < take[:, None]
        # Update only the [batch, width] selected entries instead of passing over the whole vocabulary again.
        s_t = st.gather(1, idx)
        penalty = s_t.abs() if variant == "paper" else s_t
        s_b = sb.gather(1, idx)
        logits.scatter_(1, idx, torch.where(chosen, s_b - alpha[:, None] * penalty, s_b))
    return logits, alpha, k, (idx, chosen)


def selection_mask(selection, shape):
    """The ``[batch, V]`` bool mask of ``I`` from ``socd_core``'s ``(indices, chosen)``."""
    import torch

    idx, chosen = selection
    return torch.zeros(shape, dtype=torch.bool, device=idx.device).scatter_(1, idx, chosen)


@dataclass
class SocdOutput:
    """What one SoCD step produced.

    Attributes:
        logits: ``[batch, width]`` float32, ``−inf`` at columns ``≥ vocab_size``.
        alpha: ``[batch]`` the disparity α.
        k: ``[batch]`` int64, the clipped ``k`` (the number of suppressed entries is ``min(k, #{d > 0})``).
        mask: ``[batch, vocab_size]`` bool, the suppressed entries ``I``.
    """

    logits: Any
    alpha: Any
    k: Any
    mask: Any


def socd_logits(base_logits, toxic_logits, *, divergence: str, variant: str = "paper", k_min: int = 10,
                vocab_size: int | None = None) -> SocdOutput:
    """Soft Contrastive Decoding at one step (SPEC §3), vectorised over the batch.

    Args:
        base_logits: ``[batch, width_b]`` logits of the base model (any float dtype).
        toxic_logits: ``[batch, width_t]`` logits of the toxic model.
        divergence: ``fkl rkl js jsd tvd emd emd_l2``; with ``variant="code"``, ``emd`` means ``emd_l2``.
        variant: ``paper`` (``ceil``, ``k ≤ V/2``, ``|s_t|``) or ``code`` (``floor``, ``k ≤ V``, raw ``s_t``).
        k_min: lower clip of ``k``.
        vocab_size: ``V``, the shared tokenizer's length; divergence and top-k see only the first ``V`` columns.
            Defaults to the logits' width.
    """
    check_variant(variant)
    check_divergence(divergence)
    if toxic_logits is None:
        raise ModelError("SoCD needs the toxic model's logits")
    sb, st, private = _vocab_view(base_logits, toxic_logits, vocab_size)
    logits, alpha, k, selection = socd_core(sb, st, divergence=divergence, variant=variant, k_min=k_min,
                                            overwrite=private)
    return SocdOutput(_pad_width(logits, base_logits.shape[1]), alpha, k, selection_mask(selection, sb.shape))


def cd_core(sb, st, *, alpha: float = 0.1, beta: float = 0.5, overwrite: bool = False):
    """Vanilla CD on contiguous float32 ``[batch, V]`` logits: ``(1 + β) s_b − β s_t`` on ``V_valid``, ``−inf``
    elsewhere (written into ``sb`` when ``overwrite``)."""
    # s_b(i) ≥ max s_b + ln α is p_b(i) ≥ α · max p_b: the normaliser cancels, so logits serve as log-probs.
    invalid = sb < sb.amax(dim=-1, keepdim=True) + math.log(alpha)
    out = sb if overwrite else sb.clone()
    return out.mul_(1.0 + beta).sub_(st, alpha=beta).masked_fill_(invalid, -math.inf)


def check_cd(alpha: float, beta: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"CD alpha must lie in (0, 1], got {alpha}")
    if beta < 0.0:
        raise ConfigError(f"CD beta must be ≥ 0, got {beta}")


def cd_logits(base_logits, toxic_logits, *, alpha: float = 0.1, beta: float = 0.5, vocab_size: int | None = None):
    """Vanilla contrastive decoding (O'Brien & Lewis 2023), expert = base, amateur = toxic (SPEC §3).

    ``V_valid = {i : s_b(i) ≥ max s_b + ln α}``; ``s_CD = (1 + β) s_b − β s_t`` on ``V_valid``, ``−inf`` elsewhere.

    Args:
        base_logits, toxic_logits: ``[batch, width]`` logits.
        vocab_size: ``V``; columns beyond it are ``−inf``.

    Returns:
        ``[batch, width_b]`` float32 logits.
    """
    check_cd(alpha, beta)
    if toxic_logits is None:
        raise ModelError("contrastive decoding needs the toxic model's logits")
    sb, st, private = _vocab_view(base_logits, toxic_logits, vocab_size)
    return _pad_width(cd_core(sb, st, alpha=alpha, beta=beta, overwrite=private), base_logits.shape[1])


@dataclass(frozen=True)
class Combiner:
    """How one rewriting method turns the models' logits into the logits to sample from.

    Call it with ``(base_logits [batch, ≥V], toxic_logits [batch, ≥V] | None)``; it returns ``(logits, stats)``
    where ``logits`` is float32 ``[batch, V]`` (the columns beyond the vocabulary are dropped, so they cannot
    be sampled) and ``stats`` holds ``alpha`` and ``k`` (``[batch]``) for SoCD and is empty otherwise.
    """

    method: str
    variant: str = "paper"
    k_min: int = 10
    cd_alpha: float = 0.1
    cd_beta: float = 0.5
    vocab_size: int | None = None

    @property
    def kind(self) -> str:
        return parse_method(self.method)[0]

    @property
    def divergence(self) -> str | None:
        div = parse_method(self.method)[1]
        return effective_divergence(div, self.variant) if div else None

    @property
    def needs_toxic(self) -> bool:
        return self.kind != "prompt"

    def __call__(self, base_logits, toxic_logits=None, *, give_base: bool = False):
        """``give_base``: the caller hands ``base_logits`` over, so the result may be written into them."""
        kind = self.kind
        if kind != "prompt" and toxic_logits is None:
            raise ModelError(f"method {self.method} needs the toxic model's logits")
        sb, st, private = _vocab_view(base_logits, toxic_logits if kind != "prompt" else None, self.vocab_size)
        private = private or give_base
        if kind == "prompt":
            return sb, {}
        if kind == "cd":
            return cd_core(sb, st, alpha=self.cd_alpha, beta=self.cd_beta, overwrite=private), {}
        logits, alpha, k, _ = socd_core(sb, st, divergence=self.divergence, variant=self.variant, k_min=self.k_min,
                                        overwrite=private)
        return logits, {"alpha": alpha, "k": k}


def make_combiner(method: str, variant: str = "paper", k_min: int = 10, cd_alpha: float = 0.1,
                  cd_beta: float = 0.5, vocab_size: int | None = None) -> Combiner:
    """Validate a method and its settings and return its ``Combiner`` (errors before any model is run)."""
    kind, _ = parse_method(method)
    check_variant(variant)
    if kind == "cd":
        check_cd(cd_alpha, cd_beta)
    if kind == "socd" and vocab_size is not None:
        _k_bounds(variant, k_min, int(vocab_size))
    elif kind == "socd" and k_min < 1:
        raise ConfigError(f"k_min must be ≥ 1, got {k_min}")
    return Combiner(method, variant, int(k_min), float(cd_alpha), float(cd_beta),
                    None if vocab_size is None else int(vocab_size))
