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
import os
from dataclasses import dataclass
from typing import Any

from hspd.divergences import DIVERGENCES, LOG_TINY, check_divergence
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


def _vocab_view(base_logits, toxic_logits, vocab_size: int | None, *, copy: bool = True):
    """The first ``V`` columns of both logit tensors as contiguous float32 ``[batch, V]``, and whether the base
    tensor is a private copy (a dtype change or a strided slice) that may be overwritten. ``copy=False``: both
    come back as plain views (any dtype and strides; not private), for ``socd_core``, which copies what it needs
    into its workspace."""
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
    st = None if toxic_logits is None else toxic_logits[:, :vocab]
    if not copy:
        return sb, st, False
    private = sb.dtype != torch.float32 or not sb.is_contiguous()
    sb = sb.float().contiguous()
    st = st.float().contiguous() if st is not None else None
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


# ----------------------------------------------------------------------------------------------------------------
# The SoCD step: `socd_core` is the fast one (the decoder's), `socd_core_unfused` the plain reference.
#
# On CPU the step is bound by passes over [batch, V] (11 MB at 18 × 152k) and by fresh tensors of that size, whose
# page faults cost more than the arithmetic. So the fast step (1) reuses a workspace, (2) runs the whole recipe on
# blocks of a few rows, whose intermediates stay in the CPU cache (every quantity is per row), (3) works in place,
# and (4) finds the k largest d from ≈ k candidates per row (a sampled threshold, then a k-th value over the
# candidates) instead of a top-k over the vocabulary.


class Workspace:
    """Reusable ``[rows, V]`` scratch tensors for ``socd_core``, one set per combiner.

    A buffer serves any smaller row count as a contiguous row prefix. Not thread-safe: one call at a time."""

    def __init__(self):
        self._buffers: dict = {}

    def get(self, name: str, rows: int, vocab: int, dtype, device):
        import torch

        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != vocab or buf.dtype != dtype or buf.device != device:
            # A normal tensor even under inference_mode: an inference tensor could not be written outside it.
            with torch.inference_mode(False):
                buf = self._buffers[name] = torch.empty((rows, vocab), dtype=dtype, device=device)
        return buf[:rows]


def _scratch(ws: Workspace | None, name: str, rows: int, vocab: int, dtype, device):
    import torch

    if ws is None:
        return torch.empty((rows, vocab), dtype=dtype, device=device)
    return ws.get(name, rows, vocab, dtype, device)


def _divergence_in_place(name: str, p, q, log_p, log_q):
    """``hspd.divergences.DIVERGENCES[name](p, q, log_p, log_q)`` ``[batch]`` by the same operations in the same
    order (bitwise the same, tested), using ``p`` and ``q`` as scratch instead of a fresh ``[batch, V]`` tensor:
    both are garbage afterwards. ``jsd`` (three temporaries) is delegated."""
    import torch

    if name == "fkl" or name == "rkl":
        a, la, lb = (p, log_p, log_q) if name == "fkl" else (q, log_q, log_p)
        ratio = torch.sub(la, lb, out=q if name == "fkl" else p)
        return ratio.nan_to_num_(nan=0.0, posinf=-LOG_TINY, neginf=LOG_TINY).mul_(a).sum(-1).clamp_min_(0.0)
    if name == "js":
        diff = p.sub_(q)
        ratio = torch.sub(log_p, log_q, out=q).nan_to_num_(nan=0.0, posinf=-LOG_TINY, neginf=LOG_TINY)
        return ratio.mul_(diff).sum(-1).mul_(0.5).clamp_min_(0.0)
    if name == "tvd":
        return p.sub_(q).abs_().sum(-1).mul_(0.5)
    if name == "emd" and p.shape[-1] >= 2:
        return p.sub_(q).cumsum_(-1).abs_().sum(-1).div_(p.shape[-1] - 1)
    if name == "emd_l2":
        return p.sub_(q).square_().sum(-1).sqrt_()
    return DIVERGENCES[name](p, q, log_p, log_q)


def _alpha_k(delta, variant: str, k_lo: int, k_hi: int, vocab: int):
    """``α`` ``[batch]`` (dtype of ``δ``) and the clipped ``k`` ``[batch]`` int64 from the divergence."""
    import torch

    log1p_delta = torch.log1p(delta.clamp_min(0.0))
    alpha = log1p_delta / (1.0 + log1p_delta)
    # k in float64: α·V near an integer must round the same way as the formula says, not as float32 does.
    scaled = alpha.double() * vocab
    k = (scaled.ceil() if variant == "paper" else scaled.floor()).clamp(k_lo, k_hi).long()
    return alpha, k


# Rows per block of socd_core on CPU: ~4 float32 [rows, V] blocks in the last-level cache; never fewer rows than
# threads, so that row reductions are split over rows as they are for a whole batch (the same bits). Fewer, larger
# blocks pay for fewer small ops per step: at 151,665 columns on 2 cores (32 MB L3), 18 rows take 17.7 ms a step in
# blocks of 3 rows (8 MB), 16.1 in blocks of 9 and 14.5 as one; 54 rows 47.9 / 45.4 / 44.8 ms in blocks of 9 / 18 / 54.
BLOCK_BYTES = 48 << 20
# Candidates (`_choose`): every SAMPLE_STRIDE-th column estimates a threshold that about
# k + SAMPLE_SIGMAS·√(k·SAMPLE_STRIDE) entries of the row exceed; only those are ranked exactly, and a row whose
# estimate falls short is redone with all its positive entries as candidates (exact either way).
SAMPLE_STRIDE = 32
SAMPLE_SIGMAS = 4.0
SAMPLE_MIN_VOCAB = 4096  # below this every positive entry is a candidate


def _block_rows(batch: int, vocab: int, device) -> int:
    import torch

    if device.type != "cpu":
        return batch
    return max(1, torch.get_num_threads(), BLOCK_BYTES // (16 * vocab))


def _candidate_threshold(d, k):
    """``[rows]`` thresholds ``t ≥ 0`` (``d``'s dtype): very likely ``#{d > t} ≥ k`` when the row has ``k``
    positive entries, and not many more; ``t = 0`` makes every positive entry a candidate."""
    import torch

    rows, vocab = d.shape
    if vocab < SAMPLE_MIN_VOCAB:
        return d.new_zeros(rows)
    sample = d[:, ::SAMPLE_STRIDE]
    # The sample's j-th largest value: about j·stride ± √j·stride entries of the row reach it.
    per = k.double() / SAMPLE_STRIDE
    j = (per + SAMPLE_SIGMAS * per.sqrt() + 4).ceil().long().clamp_min(1)
    j_max = int(j.max())  # host sync: the top-k needs a static size
    if j_max > sample.shape[1] // 2:  # k near V/2 or more: most positive entries are candidates anyway
        return d.new_zeros(rows)
    v = sample.topk(j_max, dim=-1, sorted=True).values.gather(1, (j - 1)[:, None]).squeeze(1)
    # d > nextafter(v, −inf) ⟺ d ≥ v; a non-positive (or NaN) v means "every positive entry".
    return torch.where(v > 0, torch.nextafter(v, v.new_full((), -math.inf)), v.new_zeros(()))


_HELPER: tuple = (None, None)  # (process id, executor)


def _helper_thread():
    """One worker thread for ``_choose``'s row loop, created on first use in each process (a forked child does
    not inherit the parent's thread, so it makes its own)."""
    global _HELPER
    pid, executor = _HELPER
    if executor is None or pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(1, thread_name_prefix="socd")
        _HELPER = (os.getpid(), executor)
    return executor


def _choose(d, k, scratch):
    """``I`` as positions in ``d.view(-1)`` (1-D int64, ascending): per row the ``min(k, #{d > 0})`` largest
    positive entries of ``d`` ``[rows, V]`` (contiguous), and of entries tied at the boundary the lower columns
    (the set a stable descending sort gives). ``k`` ``[rows]`` int64; ``scratch`` a ``[rows, V]`` bool tensor.

    Passes over ``[rows, V]``: a comparison and a compaction (plus a strided sample for the candidates'
    threshold); the ranking runs over the candidates only."""
    import torch

    rows, vocab = d.shape
    dev = d.device
    thr = _candidate_threshold(d, k)
    row_starts = torch.arange(rows + 1, device=dev) * vocab
    while True:
        flat = torch.gt(d, thr[:, None], out=scratch).view(-1).nonzero().squeeze(1)  # candidates, row by row
        counts = torch.searchsorted(flat, row_starts).diff()  # cheaper than counting the [rows, V] mask
        short = (thr > 0) & (counts < k)  # the estimate missed: those rows take all their positive entries
        take = torch.minimum(k, counts)  # = k where thr > 0 (then #{d > 0} ≥ counts ≥ k)
        n_short, n_partial = torch.stack([short.sum(), (take < counts).sum()]).tolist()  # one host sync
        if not n_short:
            break
        thr = thr.masked_fill(short, 0.0)
    if not n_partial:
        return flat  # every candidate is chosen (rows with at most k positive entries)

    # τ_r: the take_r-th largest of row r's candidates (grouped by row, in column order); −inf where all are
    # taken. A loop over rows (kthvalue takes one rank for all rows), each kthvalue on one thread: on CPU a second
    # thread takes every other row (torch releases the GIL inside the op).
    values = d.view(-1).index_select(0, flat)
    ends = counts.cumsum(0).tolist()
    jobs = [(r, ends[r] - n, ends[r], n - t + 1) for r, (n, t) in enumerate(zip(counts.tolist(), take.tolist()))
            if t < n]

    def kth(part):
        return [torch.kthvalue(values[lo:hi], rank).values for _, lo, hi, rank in part]

    if dev.type == "cpu" and len(jobs) >= 4 and torch.get_num_threads() > 1:
        other = _helper_thread().submit(kth, jobs[1::2])
        found = [None] * len(jobs)
        found[0::2], found[1::2] = kth(jobs[0::2]), other.result()
    else:
        found = kth(jobs)
    tau = values.new_full((rows,), -math.inf)
    tau[[r for r, *_ in jobs]] = torch.stack(found)
    row_of = torch.repeat_interleave(torch.arange(rows, device=dev), counts, output_size=flat.numel())
    keep = values >= tau.index_select(0, row_of)
    chosen = flat.masked_select(keep)
    extra = torch.searchsorted(chosen, row_starts).diff() - take
    if bool(extra.any()):
        # Entries tied at τ beyond a row's take: the last ones in column order are dropped.
        for r in extra.nonzero().flatten().tolist():
            seg = slice(ends[r] - int(counts[r]), ends[r])
            tied = (values[seg] == tau[r]).nonzero().flatten()
            keep[seg][tied[len(tied) - int(extra[r]):]] = False
        chosen = flat.masked_select(keep)
    return chosen


def _storage_line(t):
    """A 1-D view over the storage span of a 2-D tensor ``t`` (any strides): ``index_select`` / ``index_copy_``
    at ``row · t.stride(0) + col · t.stride(1)`` read and write ``t[row, col]``, cheaper than 2-D indexing."""
    span = (t.shape[0] - 1) * t.stride(0) + (t.shape[1] - 1) * t.stride(1) + 1
    return t.as_strided((span,), (1,), t.storage_offset())


def socd_core(sb, st, *, divergence: str, variant: str = "paper", k_min: int = 10, overwrite: bool = False,
              workspace: Workspace | None = None, with_mask: bool = False):
    """SoCD on logits that hold exactly the vocabulary's columns.

    Args:
        sb: base logits ``[batch, V]``, float32, any strides.
        st: toxic logits ``[batch, V]``, any float dtype and strides (only read).
        overwrite: write the result into ``sb`` (a tensor the caller hands over) instead of a new one.
        workspace: reuse its scratch tensors instead of allocating fresh ones (the decoder's combiner).
        with_mask: also return ``I`` as a mask.

    Returns:
        ``(logits [batch, V], alpha [batch], k [batch] int64, mask [batch, V] bool or None)``; ``logits`` is
        ``sb`` itself when ``overwrite``, else a new contiguous tensor.

    Per block of rows, passes over ``[rows, V]``: copies into the workspace where the input is strided or not
    float32, two log-softmaxes and two softmaxes, the divergence (in place), ``d``, and the selection's comparison
    and compaction (``_choose``); the update touches the selected entries only.
    """
    import torch

    batch, vocab = sb.shape
    k_lo, k_hi = _k_bounds(variant, k_min, vocab)
    dev = sb.device
    name = effective_divergence(divergence, variant)
    logits = sb if overwrite else sb.clone(memory_format=torch.contiguous_format)
    mask = torch.zeros((batch, vocab), dtype=torch.bool, device=dev) if with_mask else None
    alphas, ks = [], []
    step = _block_rows(batch, vocab, dev)
    for lo in range(0, batch, step):
        rows = slice(lo, min(batch, lo + step))
        n = rows.stop - lo

        def buf(key, dtype=torch.float32):
            return _scratch(workspace, key, n, vocab, dtype, dev)

        b, t = sb[rows], st[rows]
        # The softmax kernels want contiguous float32 input.
        x = b if b.is_contiguous() else buf("x").copy_(b)
        log_pb = torch._log_softmax(x, -1, False, out=buf("log_pb"))
        p = torch._softmax(x, -1, False, out=buf("p"))
        y = t if t.dtype == torch.float32 and t.is_contiguous() else buf("x").copy_(t)
        log_pt = torch._log_softmax(y, -1, False, out=buf("d"))
        q = torch._softmax(y, -1, False, out=buf("q"))
        alpha, k = _alpha_k(_divergence_in_place(name, p, q, log_pb, log_pt), variant, k_lo, k_hi, vocab)
        d = log_pt.sub_(log_pb)  # d = log p_t − log p_b, in place: log p_t is not needed any more
        chosen = _choose(d, k, buf("cand", torch.bool))
        alphas.append(alpha)
        ks.append(k)
        if mask is not None:
            mask[rows].view(-1).index_fill_(0, chosen, True)
        if not chosen.numel():
            continue
        # s' = s_b − α·|s_t| (paper) or s_b − α·s_t (code), on the chosen entries only.
        row = torch.div(chosen, vocab, rounding_mode="floor")
        col = chosen - row * vocab
        out = logits[rows]
        at_out = row * out.stride(0) + col * out.stride(1)
        at_t = at_out if t.stride() == out.stride() else row * t.stride(0) + col * t.stride(1)
        s_t = _storage_line(t).index_select(0, at_t).float()
        penalty = s_t.abs_() if variant == "paper" else s_t
        # x + (−1)·y is x − y bit for bit (IEEE subtraction is the addition of the negation).
        _storage_line(out).index_add_(0, at_out, alpha.index_select(0, row).mul_(penalty), alpha=-1)
    return logits, torch.cat(alphas), torch.cat(ks), mask


def socd_core_unfused(sb, st, *, divergence: str, variant: str = "paper", k_min: int = 10):
    """The straightforward SoCD step, the reference for ``socd_core`` (tests, ``bench_socd.py --profile``): the
    SPEC's recipe on the whole batch, a fresh tensor for every intermediate, ``hspd.divergences`` as is, one
    top-k over the whole vocabulary.

    Args:
        sb, st: base and toxic logits ``[batch, V]``, float32, contiguous.

    Returns:
        as ``socd_core`` with ``with_mask=True``. Which of several entries tied at the k-th largest ``d`` is
        chosen is up to ``torch.topk`` here; ``socd_core`` takes the lowest columns.
    """
    import torch

    batch, vocab = sb.shape
    k_lo, k_hi = _k_bounds(variant, k_min, vocab)
    log_pb = torch.log_softmax(sb, dim=-1)
    log_pt = torch.log_softmax(st, dim=-1)
    p, q = torch.softmax(sb, dim=-1), torch.softmax(st, dim=-1)
    alpha, k = _alpha_k(DIVERGENCES[effective_divergence(divergence, variant)](p, q, log_pb, log_pt), variant,
                        k_lo, k_hi, vocab)
    d = log_pt - log_pb
    take = torch.minimum(k, torch.count_nonzero(d > 0, dim=-1))  # all positives when fewer than k are positive
    width = int(take.max())
    mask = torch.zeros((batch, vocab), dtype=torch.bool, device=sb.device)
    if width:
        idx = torch.topk(d, width, dim=-1, sorted=True).indices
        mask.scatter_(1, idx, torch.arange(width, device=sb.device) < take[:, None])
    penalty = st.abs() if variant == "paper" else st
    return torch.where(mask, sb - alpha[:, None] * penalty, sb), alpha, k, mask


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
    logits, alpha, k, mask = socd_core(sb, st, divergence=divergence, variant=variant, k_min=k_min,
                                       overwrite=private, with_mask=True)
    return SocdOutput(_pad_width(logits, base_logits.shape[1]), alpha, k, mask)


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
    be sampled; with ``give_base`` it may be a strided view into ``base_logits``) and ``stats`` holds ``alpha``
    and ``k`` (``[batch]``) for SoCD and is empty otherwise.
    """

    method: str
    variant: str = "paper"
    k_min: int = 10
    cd_alpha: float = 0.1
    cd_beta: float = 0.5
    vocab_size: int | None = None

    def __post_init__(self):
        # Scratch tensors reused from step to step (not a field: no part of equality, hashing or ``describe``).
        object.__setattr__(self, "_workspace", Workspace())

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
        import torch

        kind = self.kind
        if kind != "prompt" and toxic_logits is None:
            raise ModelError(f"method {self.method} needs the toxic model's logits")
        # SoCD reads the logits through views (no [batch, V] copies: its workspace holds what it needs) and, when
        # handed the base logits, writes its result into their first V columns: a strided view, returned as is.
        sb, st, private = _vocab_view(base_logits, toxic_logits if kind != "prompt" else None, self.vocab_size,
                                      copy=kind != "socd")
        if kind == "socd" and sb.dtype != torch.float32:
            sb, private = sb.float(), True
        private = private or give_base
        if kind == "prompt":
            return sb, {}
        if kind == "cd":
            return cd_core(sb, st, alpha=self.cd_alpha, beta=self.cd_beta, overwrite=private), {}
        logits, alpha, k, _ = socd_core(sb, st, divergence=self.divergence, variant=self.variant, k_min=self.k_min,
                                        overwrite=private, workspace=self._workspace)
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
