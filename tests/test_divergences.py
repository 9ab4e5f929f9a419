"""The seven divergences of SoCD: hand-computed values, references in float64 (numpy / scipy), properties."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import wasserstein_distance

from hspd.divergences import DIVERGENCES, LOG_TINY, divergence
from hspd.errors import ConfigError, ModelError

SYMMETRIC = ["js", "jsd", "tvd", "emd", "emd_l2"]


def random_dists(batch=5, vocab=40, seed=0, zeros=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(batch, vocab, generator=g), -1)
    q = torch.softmax(3 * torch.randn(batch, vocab, generator=g), -1)
    if zeros:  # exact zeros in both, some only in one of them
        p[:, :5] = 0
        q[:, 3:8] = 0
        p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    return p, q


def reference(name, p, q):
    """float64 reference, one row at a time, from scipy / numpy formulas."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    kl = lambda a, b: rel_entr(a, b).sum()  # noqa: E731 - rel_entr has 0·log(0/x) = 0
    ids = np.arange(len(p))
    return {
        "fkl": lambda: kl(p, q),
        "rkl": lambda: kl(q, p),
        "js": lambda: 0.5 * (kl(p, q) + kl(q, p)),
        "jsd": lambda: jensenshannon(p, q) ** 2,  # scipy returns the square root, natural log
        "tvd": lambda: 0.5 * np.abs(p - q).sum(),
        "emd": lambda: wasserstein_distance(ids, ids, p, q) / (len(p) - 1),
        "emd_l2": lambda: np.sqrt(((p - q) ** 2).sum()),
    }[name]()


def test_hand_computed_values():
    # P = (0.5, 0.5), Q = (0.9, 0.1), V = 2.
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    # KL(P‖Q) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5(−0.587787) + 0.5(1.609438) = 0.510826
    assert divergence("fkl", p, q).item() == pytest.approx(0.510826, abs=1e-6)
    # KL(Q‖P) = 0.9 ln(1.8) + 0.1 ln(0.2) = 0.9(0.587787) + 0.1(−1.609438) = 0.368064
    assert divergence("rkl", p, q).item() == pytest.approx(0.368064, abs=1e-6)
    assert divergence("js", p, q).item() == pytest.approx((0.510826 + 0.368064) / 2, abs=1e-6)
    # M = (0.7, 0.3): ½[0.5 ln(0.5/0.7) + 0.5 ln(0.5/0.3)] + ½[0.9 ln(0.9/0.7) + 0.1 ln(0.1/0.3)]
    #   = ½[−0.168236 + 0.255413] + ½[0.226183 − 0.109861] = 0.043588 + 0.058161 = 0.101750
    assert divergence("jsd", p, q).item() == pytest.approx(0.101750, abs=1e-6)
    # ½(0.4 + 0.4) = 0.4
    assert divergence("tvd", p, q).item() == pytest.approx(0.4, abs=1e-7)
    # CDFs (0.5, 1) and (0.9, 1): |0.5 − 0.9| + 0 = 0.4, over V − 1 = 1
    assert divergence("emd", p, q).item() == pytest.approx(0.4, abs=1e-7)
    # sqrt(0.4² + 0.4²) = 0.565685
    assert divergence("emd_l2", p, q).item() == pytest.approx(0.565685, abs=1e-6)


def test_emd_counts_distance_between_token_ids():
    # All mass on token 0 vs all on token 3 of V = 4: moved 3 ids, normalised by V − 1 = 3 → 1.
    p, q = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1.0]])
    assert divergence("emd", p, q).item() == pytest.approx(1.0)
    # To the neighbour: 1/3. TVD cannot tell the two apart (both 1).
    q1 = torch.tensor([[0, 1.0, 0, 0]])
    assert divergence("emd", p, q1).item() == pytest.approx(1 / 3)
    assert divergence("tvd", p, q).item() == divergence("tvd", p, q1).item() == 1.0


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("zeros", [False, True])
def test_against_float64_reference(name, zeros):
    p, q = random_dists(zeros=zeros)
    got = divergence(name, p, q)
    assert got.shape == (5,) and torch.isfinite(got).all()
    if zeros and name in ("fkl", "rkl", "js"):
        # Where one side is 0 and the other not, the true KL is +∞; the clamped log gives a large finite value.
        both = (p > 0) & (q > 0)
        p, q = p * both, q * both
        assert (got > 1).all()
        return
    want = torch.tensor([reference(name, a, b) for a, b in zip(p, q)], dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_zero_on_identical_inputs(name):
    p, _ = random_dists(zeros=True)
    assert torch.allclose(divergence(name, p, p), torch.zeros(5), atol=1e-7)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetric(name):
    p, q = random_dists(seed=3)
    torch.testing.assert_close(divergence(name, p, q), divergence(name, q, p), rtol=1e-5, atol=1e-7)


def test_kl_is_not_symmetric_and_js_averages_both():
    p, q = random_dists(seed=4)
    assert not torch.allclose(divergence("fkl", p, q), divergence("rkl", p, q))
    torch.testing.assert_close(divergence("js", p, q), 0.5 * (divergence("fkl", p, q) + divergence("rkl", p, q)))


def test_bounds():
    p, q = random_dists(seed=5, vocab=200)
    assert (divergence("tvd", p, q) <= 1).all() and (divergence("jsd", p, q) <= math.log(2) + 1e-6).all()
    assert (divergence("emd", p, q) <= 1).all()
    # Disjoint supports reach the bounds.
    a, b = torch.tensor([[0.5, 0.5, 0, 0]]), torch.tensor([[0, 0, 0.25, 0.75]])
    assert divergence("tvd", a, b).item() == pytest.approx(1.0)
    assert divergence("jsd", a, b).item() == pytest.approx(math.log(2), abs=1e-6)
    # KL with disjoint supports is +∞ in theory: here every log-ratio is clamped to −LOG_TINY ≈ 87.3, never NaN.
    assert divergence("fkl", a, b).item() == pytest.approx(-LOG_TINY, rel=1e-6)


@pytest.mark.parametrize("name", ["fkl", "rkl", "js", "jsd"])
def test_log_probabilities_path_matches_probabilities_path(name):
    logits_p, logits_q = torch.randn(3, 50), torch.randn(3, 50)
    p, q = logits_p.softmax(-1), logits_q.softmax(-1)
    with_logs = divergence(name, p, q, log_p=logits_p.log_softmax(-1), log_q=logits_q.log_softmax(-1))
    torch.testing.assert_close(with_logs, divergence(name, p, q), rtol=1e-5, atol=1e-6)
    # −∞ log-probabilities (masked logits) do not poison the result.
    logits_p[:, :4] = -math.inf
    p = logits_p.softmax(-1)
    out = divergence(name, p, q, log_p=logits_p.log_softmax(-1), log_q=logits_q.log_softmax(-1))
    assert torch.isfinite(out).all()


def test_emd_accurate_at_qwen_vocabulary_size():
    # 151,936 tokens in float32: the cumulative sum of P − Q keeps the error far below the value.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 151_936, generator=g) * 4
    p = logits.softmax(-1)
    q = (logits + 0.3 * torch.randn(2, 151_936, generator=g)).softmax(-1)
    want = (p.double() - q.double()).cumsum(-1).abs().sum(-1) / (151_936 - 1)
    torch.testing.assert_close(divergence("emd", p, q).double(), want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_inputs_are_not_modified(name):
    p, q = random_dists(seed=6)
    log_p, log_q = p.log(), q.log()
    before = [t.clone() for t in (p, q, log_p, log_q)]
    divergence(name, p, q)
    divergence(name, p, q, log_p=log_p, log_q=log_q)
    assert all(torch.equal(a, b) for a, b in zip(before, (p, q, log_p, log_q)))


def test_errors():
    p, q = random_dists()
    with pytest.raises(ConfigError, match=r"unknown divergence 'kl'.*'emd'"):
        divergence("kl", p, q)
    with pytest.raises(ModelError, match=r"divergence tvd: p has shape \(5, 40\) but q has \(5, 10\)"):
        divergence("tvd", p, q[:, :10])
