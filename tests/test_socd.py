"""SoCD and CD logit combiners: a step computed by hand, a per-row float64 reference, vocabulary masking, bf16."""

import math

import numpy as np
import pytest
import torch

from hspd.errors import ConfigError, ModelError
from hspd.socd import METHODS, Combiner, cd_logits, make_combiner, parse_method, socd_logits
from test_divergences import reference as divergence_reference

# A 12-token vocabulary where every log-ratio d = ln(q/p) is clearly non-zero (no float noise decides a sign).
P = [0.23, 0.25, 0.10, 0.10, 0.10, 0.10, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02]
Q = [0.05, 0.20, 0.30, 0.12, 0.04, 0.08, 0.04, 0.05, 0.03, 0.01, 0.07, 0.01]
# d = ln(Q/P) = [−1.526, −0.223, 1.099, 0.182, −0.916, −0.223, 0.693, 0.916, 0.405, −0.693, 1.253, −0.693]
# positive, largest first: 10 (1.253), 2 (1.099), 7 (0.916), 6 (0.693), 8 (0.405), 3 (0.182)
TOXIC_SHIFT = 2.5  # s_t = ln Q + 2.5: mixed signs, so |s_t| (paper) and s_t (code) differ


def hand_logits():
    s_b = torch.tensor([P]).log()
    s_t = torch.tensor([Q]).log() + TOXIC_SHIFT
    return s_b, s_t


def test_socd_step_by_hand_paper():
    s_b, s_t = hand_logits()
    out = socd_logits(s_b, s_t, divergence="tvd", variant="paper", k_min=2)
    # TVD = ½ Σ|P − Q| = ½(0.18 + 0.05 + 0.20 + 0.02 + 0.06 + 0.02 + 0.02 + 0.03 + 0.01 + 0.01 + 0.05 + 0.01)
    #     = ½ · 0.66 = 0.33
    # α = ln(1.33) / (1 + ln(1.33)) = 0.285179 / 1.285179 = 0.221899
    alpha = math.log(1.33) / (1 + math.log(1.33))
    assert out.alpha.item() == pytest.approx(0.221899, abs=1e-6) and alpha == pytest.approx(0.221899, abs=1e-6)
    # k = clip(ceil(0.221899 · 12 = 2.663), 2, 12 / 2 = 6) = 3 → I = the 3 largest positive d: {10, 2, 7}
    assert out.k.item() == 3
    assert out.mask[0].nonzero().flatten().tolist() == [2, 7, 10]
    want = s_b.clone()
    # s'_i = ln P_i − α |ln Q_i + 2.5|:
    want[0, 10] = math.log(0.02) - alpha * abs(math.log(0.07) + 2.5)  # −3.912023 − α·0.159302 = −3.947372
    want[0, 2] = math.log(0.10) - alpha * abs(math.log(0.30) + 2.5)  # −2.302585 − α·1.296027 = −2.590177
    want[0, 7] = math.log(0.02) - alpha * abs(math.log(0.05) + 2.5)  # −3.912023 − α·0.495732 = −4.022026
    assert want[0, 10].item() == pytest.approx(-3.947372, abs=1e-5)
    torch.testing.assert_close(out.logits, want)


def test_socd_step_by_hand_code():
    s_b, s_t = hand_logits()
    out = socd_logits(s_b, s_t, divergence="tvd", variant="code", k_min=2)
    alpha = math.log(1.33) / (1 + math.log(1.33))
    # k = clip(floor(2.663), 2, 12) = 2 → I = {10, 2}
    assert out.k.item() == 2
    assert out.mask[0].nonzero().flatten().tolist() == [2, 10]
    want = s_b.clone()
    # The raw toxic logit: at token 10 it is negative, so the "suppression" raises the logit.
    want[0, 10] = math.log(0.02) - alpha * (math.log(0.07) + 2.5)  # −3.912023 + α·0.159302 = −3.876674
    want[0, 2] = math.log(0.10) - alpha * (math.log(0.30) + 2.5)  # −2.590177
    assert want[0, 10].item() == pytest.approx(-3.876674, abs=1e-5)
    torch.testing.assert_close(out.logits, want)


def test_socd_rows_with_different_k_and_few_positives():
    # Row 1 is row 0 of the hand test; row 2: Q2 = 0.97·P except token 5, which takes the rest:
    # Q2_5 = 1 − 0.97 · 0.9 = 0.127, so only d_5 = ln 1.27 > 0 (the others are ln 0.97 < 0).
    q2 = [0.97 * p for p in P]
    q2[5] = 1 - 0.97 * 0.9
    s_b = torch.tensor([P, P]).log()
    s_t = torch.cat([torch.tensor([Q]).log() + TOXIC_SHIFT, torch.tensor([q2]).log()])
    out = socd_logits(s_b, s_t, divergence="tvd", variant="paper", k_min=2)
    # TVD row 2 = ½(0.03 · 0.9 + 0.027) = 0.027; α = ln 1.027 / (1 + ln 1.027) = 0.026642 / 1.026642 = 0.025951
    assert out.alpha[1].item() == pytest.approx(0.025951, abs=1e-6)
    # k = clip(ceil(0.311), 2, 6) = 2, but one entry is positive: I = {5}
    assert out.k.tolist() == [3, 2]
    assert out.mask[1].nonzero().flatten().tolist() == [5]
    assert out.mask[0].nonzero().flatten().tolist() == [2, 7, 10]
    assert out.logits[1, 5].item() == pytest.approx(math.log(0.1) - 0.025951 * abs(math.log(0.127)), abs=1e-5)


def test_cd_step_by_hand():
    s_b, s_t = hand_logits()
    out = cd_logits(s_b, s_t, alpha=0.1, beta=0.5)
    # V_valid: ln P_i ≥ ln 0.25 + ln 0.1 = ln 0.025 → tokens 0–5 (P ≥ 0.1); the 0.02 tokens are out.
    assert torch.isinf(out[0, 6:]).all() and torch.isfinite(out[0, :6]).all()
    # s_CD = 1.5 ln P − 0.5 (ln Q + 2.5); token 2: 1.5(−2.302585) − 0.5(1.296027) = −3.453878 − 0.648014 = −4.101891
    assert out[0, 2].item() == pytest.approx(-4.101891, abs=1e-5)
    want = 1.5 * torch.tensor(P).log()[:6] - 0.5 * (torch.tensor(Q).log()[:6] + TOXIC_SHIFT)
    torch.testing.assert_close(out[0, :6], want)


# ----------------------------------------------------------------------------------------------------------------
# Per-row float64 reference


def socd_row_reference(s_b, s_t, name, variant, k_min):
    """One row, float64, plain Python: the SPEC §3 recipe written out without vectorisation."""
    s_b, s_t = s_b.double(), s_t.double()
    lp, lq = s_b.log_softmax(0), s_t.log_softmax(0)
    if variant == "code" and name == "emd":
        name = "emd_l2"
    delta = divergence_reference(name, lp.exp().numpy(), lq.exp().numpy())
    alpha = math.log1p(delta) / (1 + math.log1p(delta))
    vocab = len(s_b)
    if variant == "paper":
        k = min(max(math.ceil(alpha * vocab), k_min), vocab // 2)
    else:
        k = min(max(math.floor(alpha * vocab), k_min), vocab)
    d = (lq - lp).tolist()
    chosen = sorted((i for i in range(vocab) if d[i] > 0), key=lambda i: -d[i])[:k]
    out = s_b.clone()
    for i in chosen:
        out[i] -= alpha * (abs(s_t[i]) if variant == "paper" else s_t[i])
    return out, alpha, k, sorted(chosen)


@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("name", ["fkl", "rkl", "js", "jsd", "tvd", "emd", "emd_l2"])
def test_vectorised_equals_per_row_reference(name, variant):
    g = torch.Generator().manual_seed(7)
    batch, vocab, width = 6, 300, 320
    s_b = 2 * torch.randn(batch, width, generator=g)
    # Rows from near-identical to very different, so k spans k_min … large.
    scale = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 4.0])[:, None]
    s_t = s_b + scale * torch.randn(batch, width, generator=g)
    s_b[:, vocab:] = 50.0  # padded columns with huge logits must be ignored
    out = socd_logits(s_b, s_t, divergence=name, variant=variant, k_min=10, vocab_size=vocab)
    assert out.logits.shape == (batch, width) and out.logits.dtype == torch.float32
    assert torch.isneginf(out.logits[:, vocab:]).all()
    for r in range(batch):
        want, alpha, k, chosen = socd_row_reference(s_b[r, :vocab], s_t[r, :vocab], name, variant, 10)
        assert out.alpha[r].item() == pytest.approx(alpha, rel=1e-4, abs=1e-6)
        assert out.k[r].item() == k
        assert out.mask[r].nonzero().flatten().tolist() == chosen
        torch.testing.assert_close(out.logits[r, :vocab].double(), want, rtol=1e-5, atol=1e-5)
    assert len(set(out.k.tolist())) > 2  # the rows really have different k


def test_vocab_size_masks_padded_columns_of_both_widths():
    # Qwen2.5-7B has 152,064 columns, 0.5B 151,936: the toxic logits may be narrower than the base ones.
    g = torch.Generator().manual_seed(0)
    s_b, s_t = torch.randn(3, 40, generator=g), torch.randn(3, 36, generator=g)
    out = socd_logits(s_b, s_t, divergence="emd", vocab_size=30, k_min=2)
    assert out.logits.shape == (3, 40) and torch.isneginf(out.logits[:, 30:]).all()
    same = socd_logits(s_b[:, :30], s_t[:, :30], divergence="emd", k_min=2)
    torch.testing.assert_close(out.logits[:, :30], same.logits)
    with pytest.raises(ModelError, match="pass vocab_size"):
        socd_logits(s_b, s_t, divergence="emd")
    with pytest.raises(ModelError, match="vocab_size 38 does not fit"):
        socd_logits(s_b, s_t, divergence="emd", vocab_size=38)
    with pytest.raises(ModelError, match=r"toxic logits \(2, 36\) do not match base logits \(3, 40\)"):
        socd_logits(s_b, s_t[:2], divergence="emd", vocab_size=30)
    with pytest.raises(ModelError, match=r"must be \[batch, width\]"):
        cd_logits(s_b[0], s_t[0])


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_bf16_inputs_are_computed_in_float32(variant):
    g = torch.Generator().manual_seed(1)
    s_b, s_t = (3 * torch.randn(4, 500, generator=g)).bfloat16(), (3 * torch.randn(4, 500, generator=g)).bfloat16()
    out = socd_logits(s_b, s_t, divergence="js", variant=variant)
    ref = socd_logits(s_b.float(), s_t.float(), divergence="js", variant=variant)
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    assert torch.equal(out.mask, ref.mask)
    cd = cd_logits(s_b, s_t)
    assert cd.dtype == torch.float32 and torch.equal(cd, cd_logits(s_b.float(), s_t.float()))


def test_code_variant_emd_means_l2():
    g = torch.Generator().manual_seed(2)
    s_b, s_t = torch.randn(2, 100, generator=g), torch.randn(2, 100, generator=g)
    a = socd_logits(s_b, s_t, divergence="emd", variant="code")
    b = socd_logits(s_b, s_t, divergence="emd_l2", variant="code")
    c = socd_logits(s_b, s_t, divergence="emd", variant="paper")
    torch.testing.assert_close(a.alpha, b.alpha)
    assert not torch.allclose(a.alpha, c.alpha)
    assert make_combiner("socd-emd", "code").divergence == "emd_l2"


def test_k_is_clipped_to_half_the_vocabulary_in_the_paper_variant():
    # Nearly disjoint: P ≈ 0.1 on tokens 0–9, Q ≈ 0.1 on tokens 10–19, each e^−20 elsewhere, V = 20.
    s_b = torch.tensor([[10.0] * 10 + [-10.0] * 10])
    s_t = torch.tensor([[-10.0] * 10 + [10.0] * 10])
    paper = socd_logits(s_b, s_t, divergence="fkl", variant="paper", k_min=2)
    code = socd_logits(s_b, s_t, divergence="fkl", variant="code", k_min=2)
    # KL(P‖Q) ≈ Σ 0.1 ln(0.1 / (0.1 e^−20)) = 20; α = ln 21 / (1 + ln 21) = 3.044522 / 4.044522 = 0.752752
    assert paper.alpha.item() == pytest.approx(0.752752, abs=1e-5)
    # paper: clip(ceil(15.06), 2, 10) = 10; code: clip(floor(15.06), 2, 20) = 15
    assert paper.k.item() == 10 and code.k.item() == 15
    assert paper.mask.sum().item() == 10 and code.mask.sum().item() == 10  # only 10 entries have d > 0


# ----------------------------------------------------------------------------------------------------------------
# Combiners


def test_parse_method_and_errors():
    assert parse_method("socd-emd") == ("socd", "emd")
    assert parse_method("cd") == ("cd", None) and parse_method("prompt") == ("prompt", None)
    assert len(METHODS) == 9
    for bad in ["socd", "socd-kl", "CD", "dexperts"]:
        with pytest.raises(ConfigError, match=r"unknown rewriting method .*'socd-emd_l2'"):
            parse_method(bad)
    with pytest.raises(ConfigError, match="unknown SoCD variant"):
        make_combiner("socd-emd", "released")
    with pytest.raises(ConfigError, match="CD alpha"):
        make_combiner("cd", cd_alpha=0.0)
    with pytest.raises(ConfigError, match=r"k_min = 7 must lie in \[1, k_max = 6\]"):
        make_combiner("socd-tvd", k_min=7, vocab_size=12)


def test_combiners_match_the_functions():
    g = torch.Generator().manual_seed(3)
    s_b, s_t = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    prompt = make_combiner("prompt", vocab_size=60)
    assert not prompt.needs_toxic
    logits, stats = prompt(s_b)
    assert logits.shape == (3, 60) and stats == {} and torch.equal(logits, s_b[:, :60])

    cd = make_combiner("cd", cd_alpha=0.2, cd_beta=1.0, vocab_size=60)
    assert cd.needs_toxic
    torch.testing.assert_close(cd(s_b, s_t)[0], cd_logits(s_b, s_t, alpha=0.2, beta=1.0, vocab_size=60)[:, :60])

    socd = make_combiner("socd-jsd", k_min=3, vocab_size=60)
    logits, stats = socd(s_b, s_t)
    ref = socd_logits(s_b, s_t, divergence="jsd", k_min=3, vocab_size=60)
    torch.testing.assert_close(logits, ref.logits[:, :60])
    assert torch.equal(stats["k"], ref.k) and torch.equal(stats["alpha"], ref.alpha)
    with pytest.raises(ModelError, match="needs the toxic model"):
        socd(s_b, None)
    assert isinstance(socd, Combiner)


def test_socd_does_not_modify_its_inputs():
    s_b, s_t = torch.randn(2, 50), torch.randn(2, 50)
    before = s_b.clone(), s_t.clone()
    socd_logits(s_b, s_t, divergence="tvd")
    make_combiner("socd-tvd")(s_b, s_t)
    assert torch.equal(s_b, before[0]) and torch.equal(s_t, before[1])


def test_suppression_only_lowers_masked_logits_in_the_paper_variant():
    g = torch.Generator().manual_seed(4)
    s_b, s_t = torch.randn(5, 200, generator=g), torch.randn(5, 200, generator=g)
    out = socd_logits(s_b, s_t, divergence="emd")
    diff = out.logits - s_b
    assert (diff[out.mask] <= 0).all() and (diff[~out.mask] == 0).all()
    assert np.allclose(diff[out.mask].numpy(), -(out.alpha[:, None] * s_t.abs())[out.mask].numpy(), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The fast step (socd_core: workspace, in place, candidate selection) against the plain one (socd_core_unfused)


def _random_logits(batch, width, seed, scales=(0.02, 0.1, 0.3, 0.6, 1.0, 2.0)):
    g = torch.Generator().manual_seed(seed)
    s_b = 3 * torch.randn(batch, width, generator=g)
    scale = torch.tensor(scales * (batch // len(scales) + 1))[:batch, None]
    return s_b, s_b + scale * torch.randn(batch, width, generator=g)


@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("name", ["fkl", "rkl", "js", "jsd", "tvd", "emd", "emd_l2"])
def test_fast_step_equals_unfused_reference(name, variant):
    from hspd.socd import SAMPLE_MIN_VOCAB, Workspace, socd_core, socd_core_unfused

    # Wide enough for the sampled candidate threshold; rows from near-identical (small k) to far apart.
    vocab = SAMPLE_MIN_VOCAB + 1904
    s_b, s_t = _random_logits(6, vocab, seed=11)
    want = socd_core_unfused(s_b, s_t, divergence=name, variant=variant, k_min=10)
    workspace = Workspace()
    for _ in range(2):  # the second call reuses the workspace
        got = socd_core(s_b.clone(), s_t, divergence=name, variant=variant, k_min=10, workspace=workspace,
                        with_mask=True)
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
        assert torch.equal(got[3], want[3])  # no ties here: the same set, bit for bit the same logits
        assert torch.equal(got[0], want[0])
    assert len(set(want[2].tolist())) > 3
    positives = ((s_t.log_softmax(-1) - s_b.log_softmax(-1)) > 0).sum(-1)
    assert torch.equal(got[3].sum(-1), torch.minimum(want[2], positives))


@pytest.mark.parametrize("block_bytes", [1, 48 << 20])
def test_fast_step_in_blocks_of_rows_and_with_a_helper_thread_equals_the_reference(monkeypatch, block_bytes):
    import hspd.socd as socd

    # 1 byte: blocks of as many rows as threads (2); 48 MB: one block, whose row loop runs on two threads.
    vocab = socd.SAMPLE_MIN_VOCAB + 1904
    s_b, s_t = _random_logits(12, vocab, seed=18)
    want = socd.socd_core_unfused(s_b, s_t, divergence="js", k_min=10)
    monkeypatch.setattr(socd, "BLOCK_BYTES", block_bytes)
    submitted = []
    real = socd._helper_thread()
    monkeypatch.setattr(socd, "_helper_thread", lambda: submitted.append(1) or real)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = socd.socd_core(s_b.clone(), s_t, divergence="js", k_min=10, workspace=socd.Workspace(),
                             with_mask=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got[3], want[3]) and torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    assert (got[3].sum(-1) < (s_t.log_softmax(-1) > s_b.log_softmax(-1)).sum(-1)).sum() >= 4  # ranked rows
    assert len(submitted) == (0 if block_bytes == 1 else 1)


def test_fast_step_without_workspace_and_from_strided_bf16_views():
    from hspd.socd import socd_core, socd_core_unfused

    s_b, s_t = _random_logits(5, 5000, seed=12)
    wide_b = torch.cat([s_b, torch.full((5, 70), 40.0)], dim=1)  # padded columns: strided [:, :V] views
    wide_t = torch.cat([s_t, torch.full((5, 70), -40.0)], dim=1).bfloat16()
    want = socd_core_unfused(s_b, wide_t[:, :5000].float(), divergence="emd", k_min=10)
    got = socd_core(wide_b[:, :5000], wide_t[:, :5000], divergence="emd", k_min=10, with_mask=True)
    assert got[0].is_contiguous() and torch.equal(got[0], want[0]) and torch.equal(got[3], want[3])
    assert torch.equal(wide_b[:, :5000], s_b)  # not overwritten
    target = wide_b.clone()
    same = socd_core(target[:, :5000], wide_t[:, :5000], divergence="emd", k_min=10, overwrite=True)
    assert same[0].data_ptr() == target.data_ptr() and torch.equal(target[:, :5000], want[0])
    assert torch.equal(target[:, 5000:], wide_b[:, 5000:])  # the padded columns are left alone


def test_combiner_workspace_across_batch_sizes_and_give_base():
    # The decoder drops finished rows, so the batch shrinks (and a new generate call may grow it again).
    s_b, s_t = _random_logits(6, 4700, seed=13)
    wide_b = torch.cat([s_b, torch.zeros(6, 30)], dim=1)
    combiner = make_combiner("socd-js", vocab_size=4700)
    for rows in (6, 2, 5, 6):
        fresh = socd_logits(wide_b[:rows], s_t[:rows], divergence="js", vocab_size=4700)
        given = wide_b[:rows].clone()
        logits, stats = combiner(given, s_t[:rows], give_base=True)
        assert torch.equal(logits, fresh.logits[:, :4700]) and torch.equal(stats["k"], fresh.k)
        assert logits.data_ptr() == given.data_ptr()  # written into the handed-over logits, no copy
        kept, _ = combiner(wide_b[:rows], s_t[:rows])
        assert torch.equal(kept, fresh.logits[:, :4700]) and kept.data_ptr() != wide_b.data_ptr()
    assert torch.equal(wide_b[:, :4700], s_b)


def test_missed_candidate_estimate_falls_back_to_every_positive(monkeypatch):
    import hspd.socd as socd

    s_b, s_t = _random_logits(6, 6000, seed=14)
    want = socd.socd_core_unfused(s_b, s_t, divergence="tvd", k_min=10)
    calls = []
    real_gt = torch.gt

    def counting_gt(*args, **kwargs):
        calls.append(1)
        return real_gt(*args, **kwargs)

    # A negative margin puts the sampled threshold above the k-th value in most rows: those rows are redone.
    monkeypatch.setattr(socd, "SAMPLE_SIGMAS", -6.0)
    monkeypatch.setattr(torch, "gt", counting_gt)
    got = socd.socd_core(s_b, s_t, divergence="tvd", k_min=10, with_mask=True)
    assert len(calls) == 2  # the comparison ran again for the rows that fell short
    assert torch.equal(got[0], want[0]) and torch.equal(got[3], want[3])


def _stable_selection(s_b, s_t, k):
    """The SPEC's I with ties broken by the lower column: a stable descending sort of d per row (float32)."""
    d = s_t.float().log_softmax(-1) - s_b.float().log_softmax(-1)
    mask = torch.zeros(d.shape, dtype=torch.bool)
    for r in range(d.shape[0]):
        order = sorted(range(d.shape[1]), key=lambda i: -d[r, i].item())
        chosen = [i for i in order if d[r, i] > 0][: int(k[r])]
        mask[r, chosen] = True
    return mask


@pytest.mark.parametrize("vocab", [40, 5000])
def test_ties_at_the_k_th_value_take_the_lowest_columns(vocab):
    # Toxic logits on a few integer levels: d takes a handful of values, each on many columns, so the k-th
    # largest is tied with many others (the sampled threshold path at 5000 columns, the direct one at 40).
    g = torch.Generator().manual_seed(15)
    s_b = torch.randint(0, 3, (4, vocab), generator=g).float()
    s_t = torch.randint(0, 4, (4, vocab), generator=g).float() * torch.tensor([[0.5], [1.0], [2.0], [0.1]])
    for variant in ("paper", "code"):
        out = socd_logits(s_b, s_t, divergence="tvd", variant=variant, k_min=3)
        assert torch.equal(out.mask, _stable_selection(s_b, s_t, out.k))
        penalty = s_t.abs() if variant == "paper" else s_t
        torch.testing.assert_close(out.logits, torch.where(out.mask, s_b - out.alpha[:, None] * penalty, s_b),
                                   rtol=0, atol=0)


def test_tie_by_hand():
    # p uniform over 8 tokens, q = (4, 2, 2, 2, 1, 1, 1, 1)/14: d = ln(8q) = (0.827, 0.134, 0.134, 0.134, −0.560 ×4).
    # TVD = ½(|1/8 − 4/14| + 3|1/8 − 2/14| + 4|1/8 − 1/14|) = ½(0.160714 + 0.053571 + 0.214286) = 3/14
    # α = ln(17/14) / (1 + ln(17/14)) = 0.194156 / 1.194156 = 0.162588; αV = 1.3007
    # paper: k = clip(ceil(1.3007), 2, 4) = 2; code: clip(floor(1.3007), 2, 8) = 2
    # I = {0} and one of the three tied tokens 1, 2, 3: the lowest, 1.
    s_b = torch.zeros(1, 8)
    s_t = torch.tensor([[4.0, 2, 2, 2, 1, 1, 1, 1]]).log()
    for variant in ("paper", "code"):
        out = socd_logits(s_b, s_t, divergence="tvd", variant=variant, k_min=2)
        assert out.alpha.item() == pytest.approx(0.162588, abs=1e-6)
        assert out.k.item() == 2
        assert out.mask[0].nonzero().flatten().tolist() == [0, 1]
        # s'_1 = 0 − α · ln 2 (s_t ≥ 0 here, so both variants agree) = −0.112698
        assert out.logits[0, 1].item() == pytest.approx(-0.112698, abs=1e-6)
        assert out.logits[0, 2].item() == 0.0


def test_in_place_divergences_equal_the_library_bit_for_bit():
    from hspd.divergences import DIVERGENCES
    from hspd.socd import _divergence_in_place

    g = torch.Generator().manual_seed(16)
    s_b, s_t = 3 * torch.randn(4, 700, generator=g), 3 * torch.randn(4, 700, generator=g)
    s_b[0, :50] = -math.inf  # zero probabilities on one side only: the clamped log-ratios
    s_t[1, 100:120] = -math.inf
    log_p, log_q = s_b.log_softmax(-1), s_t.log_softmax(-1)
    for name, fn in DIVERGENCES.items():
        want = fn(log_p.exp(), log_q.exp(), log_p, log_q)
        got = _divergence_in_place(name, log_p.exp(), log_q.exp(), log_p, log_q)
        assert torch.equal(got, want), name
    one = torch.zeros(2, 1)
    assert torch.equal(_divergence_in_place("emd", one.exp(), one.exp(), one, one), torch.zeros(2))


def test_combiner_workspace_inside_and_outside_inference_mode():
    s_b, s_t = _random_logits(3, 4200, seed=17)
    combiner = make_combiner("socd-emd", vocab_size=4200)
    want = socd_logits(s_b, s_t, divergence="emd", vocab_size=4200)
    with torch.inference_mode():
        inside, _ = combiner(s_b, s_t)
    outside, _ = combiner(s_b, s_t)
    assert torch.equal(inside, want.logits) and torch.equal(outside, want.logits)


def test_the_helper_thread_is_made_again_in_a_forked_child():
    import multiprocessing as mp

    from hspd.socd import _helper_thread

    assert _helper_thread().submit(lambda: 1 + 1).result(timeout=10) == 2
    # The parent's worker thread does not exist in a forked child: a reused executor would never run the job.
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_child_runs_a_helper_job).get(timeout=60) == 6


def _child_runs_a_helper_job():
    from hspd.socd import _helper_thread

    return _helper_thread().submit(lambda: 2 * 3).result(timeout=10)
