"""The divergences between the base and the toxic next-token distribution that drive SoCD (SPEC §3, HSPD
Table 2).

Every function takes ``p`` (base) and ``q`` (toxic), probabilities of shape ``[batch, vocab]``, and returns one
value per row, ``[batch]``. The KL-type functions also accept the log-probabilities when the caller already has
them (``log_softmax`` is more accurate than ``log(softmax)`` in the tail), so SoCD computes each log once.

Numerics: ``0 · log 0 = 0``; a log-ratio that is infinite (a zero probability on one side only) is clamped to
``±87.3`` (``−log`` of float32's smallest normal number), so a KL between disjoint supports is large and finite,
never ``inf`` or NaN. Each function allocates one or two ``[batch, vocab]`` temporaries and works in place on them
(on CPU a fresh 10 MB tensor costs more than the arithmetic).
"""

from __future__ import annotations

import math

from hspd.errors import ConfigError, ModelError

LOG_TINY = math.log(1.1754943508222875e-38)  # log of float32's smallest normal number, ≈ −87.3


def _log_ratio(p, q, log_p=None, log_q=None):
    """``log p − log q`` as a fresh tensor; ``±inf`` → ``∓LOG_TINY``, NaN (zero on both sides) → 0."""
    import torch

    log_p = torch.log(p) if log_p is None else log_p
    log_q = torch.log(q) if log_q is None else log_q
    return torch.sub(log_p, log_q).nan_to_num_(nan=0.0, posinf=-LOG_TINY, neginf=LOG_TINY)


def fkl(p, q, log_p=None, log_q=None):
    """Forward KL, KL(P‖Q) = Σ P (log P − log Q): base against toxic. ``[batch]``."""
    return _log_ratio(p, q, log_p, log_q).mul_(p).sum(-1).clamp_min_(0.0)


def rkl(p, q, log_p=None, log_q=None):
    """Reverse KL, KL(Q‖P): toxic against base. ``[batch]``."""
    return fkl(q, p, log_q, log_p)


def js(p, q, log_p=None, log_q=None):
    """½(KL(P‖Q) + KL(Q‖P)), HSPD's "JS" (Table 2 and the released code): the symmetrised KL. ``[batch]``."""
    # ½ Σ (p − q)(log p − log q): one pass instead of two KLs; every term is ≥ 0.
    return _log_ratio(p, q, log_p, log_q).mul_(p - q).sum(-1).mul_(0.5).clamp_min_(0.0)


def jsd(p, q, log_p=None, log_q=None):
    """The Jensen–Shannon divergence ½KL(P‖M) + ½KL(Q‖M), M = (P + Q)/2, in nats (≤ ln 2). ``[batch]``."""
    import torch

    log_p = torch.log(p) if log_p is None else log_p
    log_q = torch.log(q) if log_q is None else log_q
    log_m = torch.logaddexp(log_p, log_q).sub_(math.log(2.0))
    left = _log_ratio(p, None, log_p, log_m).mul_(p)
    right = _log_ratio(q, None, log_q, log_m).mul_(q)
    return left.add_(right).sum(-1).mul_(0.5).clamp_min_(0.0)


def tvd(p, q, log_p=None, log_q=None):
    """Total variation distance ½ Σ |P − Q| (in [0, 1]). ``[batch]``."""
    return (p - q).abs_().sum(-1).mul_(0.5)


def emd(p, q, log_p=None, log_q=None):
    """1-D earth mover's distance over token ids with ground distance |i − j| / (V − 1), so in [0, 1]:
    Σ_i |CDF_P(i) − CDF_Q(i)| / (V − 1). ``[batch]``."""
    vocab = p.shape[-1]
    if vocab < 2:
        return p.new_zeros(p.shape[:-1])
    # The cumulative sum of the difference stays small where the CDFs agree, so float32 keeps it accurate even
    # at 152k tokens, where two float32 CDFs near 1 would each carry ~1e-5 of rounding.
    return (p - q).cumsum_(-1).abs_().sum(-1).div_(vocab - 1)


def emd_l2(p, q, log_p=None, log_q=None):
    """‖P − Q‖₂: what the released code's "EMD" computes. ``[batch]``."""
    return (p - q).square_().sum(-1).sqrt_()


DIVERGENCES = {"fkl": fkl, "rkl": rkl, "js": js, "jsd": jsd, "tvd": tvd, "emd": emd, "emd_l2": emd_l2}


def check_divergence(name: str) -> str:
    """Return ``name`` if it is a known divergence, else a ``ConfigError`` listing the known ones."""
    if name not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {name!r}; choose one of {sorted(DIVERGENCES)}")
    return name


def divergence(name: str, p, q, *, log_p=None, log_q=None):
    """δ = f(P, Q) per row for the divergence called ``name``.

    Args:
        name: one of ``fkl rkl js jsd tvd emd emd_l2``.
        p: base probabilities ``[batch, vocab]``.
        q: toxic probabilities ``[batch, vocab]``.
        log_p, log_q: optional log-probabilities of the same shape (used by the KL-type divergences).

    Returns:
        ``[batch]`` divergences, in the dtype of ``p``.
    """
    fn = DIVERGENCES[check_divergence(name)]
    if p.shape != q.shape:
        raise ModelError(f"divergence {name}: p has shape {tuple(p.shape)} but q has {tuple(q.shape)}")
    return fn(p, q, log_p, log_q)
