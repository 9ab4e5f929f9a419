"""The dual-model decoder: per-row randomness, sampling against HF's processors, cached against uncached decoding,
batch invariance, stops, vocabulary masking, model checks, and the out-of-memory back-off."""

import math
from dataclasses import replace

import pytest
import torch

import _tiny
from hspd.decoding import (DualModelDecoder, Row, SamplingConfig, apply_repetition_penalty,
                           batches_with_oom_backoff, filter_top_k_top_p, inverse_cdf, left_pad, new_cache, row_seed,
                           row_uniforms, sample_tokens, sampling_config)
from hspd.errors import ConfigError, ModelError
from hspd.socd import make_combiner

V = _tiny.VOCAB


@pytest.fixture(scope="module")
def tok():
    return _tiny.tokenizer()


@pytest.fixture(scope="module")
def base():
    return _tiny.qwen2(0)


@pytest.fixture(scope="module")
def toxic():
    return _tiny.qwen2(1)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------------------------------
# Randomness and sampling


def test_row_uniforms_depend_only_on_the_row():
    seeds = [row_seed(0, "a", c) for c in range(3)]
    u = row_uniforms(seeds, 50)
    assert u.shape == (3, 50) and u.dtype == torch.float64
    assert torch.equal(row_uniforms(seeds[1:2], 7)[0], u[1, :7])  # other rows, fewer steps: same numbers
    assert ((u >= 0) & (u < 1)).all()
    big = row_uniforms(list(range(200)), 100)
    assert abs(big.mean().item() - 0.5) < 0.01 and abs(big.var().item() - 1 / 12) < 0.005


def test_row_seed_keys_on_seed_text_and_candidate():
    keys = {row_seed(s, t, c) for s in (0, 1) for t in ("a", "b", 7) for c in (0, 1)}
    assert len(keys) == 12 and row_seed(0, "a", 1) == row_seed(0, "a", 1)
    assert all(0 <= k < 2**64 for k in keys)


def test_inverse_cdf_by_hand():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(5, 1)
    u = torch.tensor([0.0, 0.05, 0.1, 0.699, 0.999], dtype=torch.float64)
    # cdf = 0.1, 0.1, 0.7, 1.0: u < 0.1 → 0; 0.1 ≤ u < 0.7 → 2 (token 1 has no mass); u ≥ 0.7 → 3
    assert inverse_cdf(probs, u).tolist() == [0, 0, 2, 2, 3]
    # Unnormalised input: the same draws.
    assert inverse_cdf(probs * 7.0, u).tolist() == [0, 0, 2, 2, 3]


def test_inverse_cdf_across_blocks_matches_a_full_cumsum():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(4 * torch.randn(64, 5000, generator=g), -1)
    probs[:, 1000:2100] = 0.0  # whole empty blocks
    u = torch.rand(64, generator=g, dtype=torch.float64)
    cdf = probs.double().cumsum(-1)
    want = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    got = inverse_cdf(probs, u)
    assert torch.equal(got, want)
    assert (probs.gather(1, got[:, None]) > 0).all()


def test_sample_tokens_follows_softmax_over_temperature_and_greedy():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -math.inf]])
    n = 20_000
    u = row_uniforms(list(range(n)), 1)[:, 0]
    for tau in (0.5, 1.0, 1.5):
        tokens = sample_tokens(logits.expand(n, -1), torch.full((n,), tau), u)
        freq = torch.bincount(tokens, minlength=5).double() / n
        torch.testing.assert_close(freq, torch.softmax(logits[0].double() / tau, -1), atol=0.012, rtol=0)
        assert freq[4] == 0
    greedy = sample_tokens(logits.expand(3, -1), torch.zeros(3), u[:3])
    assert greedy.tolist() == [0, 0, 0]


def test_top_k_top_p_match_hf_warpers():
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(8, 300, generator=g)
    for top_k, top_p in [(20, 0.8), (20, 1.0), (None, 0.8), (5, 0.3), (300, 0.95)]:
        want = logits.clone()
        if top_k:
            want = TopKLogitsWarper(top_k)(None, want)
        if top_p < 1:
            want = TopPLogitsWarper(top_p)(None, want)
        values, indices = filter_top_k_top_p(logits, top_k, top_p)
        got = torch.full_like(logits, -math.inf).scatter(1, indices, values)
        assert torch.equal(torch.isfinite(got), torch.isfinite(want)), (top_k, top_p)
        torch.testing.assert_close(got[torch.isfinite(got)], want[torch.isfinite(want)])


def test_top_k_keeps_ties_like_hf():
    from transformers import TopKLogitsWarper

    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])  # the 2nd-best value is tied
    values, indices = filter_top_k_top_p(logits, 2, 1.0)
    kept = sorted(indices[torch.isfinite(values)].tolist())
    hf = torch.isfinite(TopKLogitsWarper(2)(None, logits.clone()))[0].nonzero().flatten().tolist()
    assert kept == hf == [0, 2, 3]


def test_repetition_penalty_matches_hf():
    from transformers import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 50, generator=g)
    ids = torch.tensor([[1, 4, 4, 9], [0, 2, 3, 5], [7, 7, 7, 7]])
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter(1, ids, True)
    want = RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    torch.testing.assert_close(apply_repetition_penalty(logits, seen, 1.3), want)


def test_sampling_config_reads_the_generation_config(base):
    assert sampling_config(base, "paper") == SamplingConfig()
    model = _tiny.qwen2(5)
    assert sampling_config(model, "code") == SamplingConfig()  # nothing set: all off
    model.generation_config.top_k, model.generation_config.top_p = 20, 0.8
    model.generation_config.repetition_penalty = 1.05
    assert sampling_config(model, "code") == SamplingConfig(20, 0.8, 1.05)
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Decoding against an uncached reference


def reference_generate(base, toxic, combiner, prompt, temperature, seed, steps, sampling=SamplingConfig(),
                       eos=()):
    """One row, no KV cache, no padding: every step re-runs both models on the whole sequence."""
    ids = list(prompt)
    u = row_uniforms([seed], steps)[0]
    out, alphas = [], []
    with torch.no_grad():
        for t in range(steps):
            x = torch.tensor([ids])
            sb = base(input_ids=x).logits[:, -1, :V]
            st = toxic(input_ids=x).logits[:, -1] if combiner.needs_toxic else None
            if sampling.repetition_penalty != 1:
                seen = torch.zeros(1, V, dtype=torch.bool)
                seen[0, torch.tensor(ids)] = True
                sb = apply_repetition_penalty(sb, seen, sampling.repetition_penalty)
            logits, stats = combiner(sb, st)
            token = sample_tokens(logits, torch.tensor([float(temperature)]), u[t:t + 1], sampling).item()
            alphas.append(stats["alpha"].item() if stats else None)
            out.append(token)
            ids.append(token)
            if token in eos:
                break
    return out, alphas


@pytest.mark.parametrize("method,variant", [("socd-emd", "paper"), ("socd-js", "code"), ("cd", "paper"),
                                            ("prompt", "code")])
def test_cached_batched_decoding_equals_uncached_reference(tok, base, toxic, method, variant):
    prompts = [encode(tok, "kalo mi nu pe ra si to"), encode(tok, "zu")]
    rows = [Row(p, temp, row_seed(3, p, c)) for p in range(2) for c, temp in enumerate([0.7, 1.4])]
    rows.append(Row(1, 0.0, 99))  # greedy
    combiner = make_combiner(method, variant, k_min=10, vocab_size=V)
    sampling = SamplingConfig(top_k=20, top_p=0.8, repetition_penalty=1.05) if variant == "code" else SamplingConfig()
    eos = tuple(range(1500, 1600))  # frequent enough that some rows stop early and the batch compacts
    decoder = DualModelDecoder(base, toxic, tok, combiner, max_new_tokens=10, sampling=sampling,
                               eos_token_ids=eos)
    outputs = decoder.generate(prompts, rows)
    finishes = set()
    for row, out in zip(rows, outputs):
        want, alphas = reference_generate(base, toxic, combiner, prompts[row.prompt], row.temperature, row.seed, 10,
                                          sampling, eos)
        assert out.token_ids == want
        finishes.add(out.finish)
        if method.startswith("socd"):
            assert out.mean_alpha == pytest.approx(sum(alphas) / len(alphas), rel=1e-4)
            assert out.mean_k >= 10
        else:
            assert out.mean_alpha is None and out.mean_k is None
    assert finishes == {"eos", "length"}


def test_candidates_are_the_same_alone_and_in_any_batch(tok, base, toxic):
    combiner = make_combiner("socd-tvd", vocab_size=V)
    decoder = DualModelDecoder(base, toxic, tok, combiner, max_new_tokens=10, eos_token_ids=range(1500, 1560))
    a, b = encode(tok, "th sh ch qu ex ka lo mi nu pe"), encode(tok, "ra")
    rows_a = [Row(0, t, row_seed(0, "a", c)) for c, t in enumerate([0.6, 1.0, 1.5])]
    alone = decoder.generate([a], rows_a)
    # Another text first (longer prompt → a is padded), the rows interleaved, and a different candidate count.
    as_second = [replace(r, prompt=1) for r in rows_a]
    mixed_rows = [Row(0, 1.2, row_seed(0, "b", 0)), as_second[2], Row(0, 0.8, row_seed(0, "b", 1)), as_second[0],
                  as_second[1]]
    mixed = decoder.generate([b, a, encode(tok, "unused")], mixed_rows)
    assert [o.token_ids for o in (mixed[3], mixed[4], mixed[1])] == [o.token_ids for o in alone]
    assert [o.text for o in (mixed[3], mixed[4], mixed[1])] == [o.text for o in alone]


def test_compaction_does_not_change_results(tok, base, toxic):
    combiner = make_combiner("socd-fkl", vocab_size=V)
    prompts = [encode(tok, "kalo mi"), encode(tok, "nu pe ra si")]
    rows = [Row(i % 2, 0.6 + 0.1 * i, row_seed(1, i % 2, i)) for i in range(10)]
    kwargs = dict(max_new_tokens=15, eos_token_ids=range(1400, 1600))
    never = DualModelDecoder(base, toxic, tok, combiner, compact_fraction=1.01, **kwargs).generate(prompts, rows)
    always = DualModelDecoder(base, toxic, tok, combiner, compact_fraction=0.0, **kwargs).generate(prompts, rows)
    assert [o.token_ids for o in never] == [o.token_ids for o in always]
    assert [o.mean_alpha for o in never] == pytest.approx([o.mean_alpha for o in always], rel=1e-6)
    assert len({o.n_tokens for o in never}) > 2  # rows really ended at different steps


def test_left_padding_gives_the_same_logits_as_alone(tok, base):
    short, long_ = encode(tok, "zu"), encode(tok, "kalo mi nu pe ra si to ve")
    ids, mask, positions = left_pad([long_, short], tok.pad_token_id)
    assert mask[1].tolist() == [0] * (len(long_) - len(short)) + [1] * len(short)
    assert positions[1, -len(short):].tolist() == list(range(len(short)))
    with torch.no_grad():
        padded = base(input_ids=ids, attention_mask=mask, position_ids=positions).logits[1, -1]
        alone = base(input_ids=torch.tensor([short])).logits[0, -1]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_preallocated_cache_matches_dynamic_cache_and_refuses_overflow(tok, base):
    ids = torch.tensor([encode(tok, "kalo mi nu pe")])
    cache = new_cache(ids.shape[1] + 1)
    with torch.no_grad():
        base(input_ids=ids, past_key_values=cache, use_cache=True)
        step = base(input_ids=torch.tensor([[42]]), past_key_values=cache, use_cache=True).logits[0, -1]
        full = base(input_ids=torch.cat([ids, torch.tensor([[42]])], 1)).logits[0, -1]
        torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
        with pytest.raises(ModelError, match="KV cache of"):
            base(input_ids=torch.tensor([[43]]), past_key_values=cache, use_cache=True)


# ----------------------------------------------------------------------------------------------------------------
# Stops, vocabulary, checks


def scripted_pair(tok, prompt, continuation):
    script = _tiny.script_after_prompt(tok, prompt, continuation)
    return _tiny.scripted(_tiny.qwen2(0), script), _tiny.scripted(_tiny.qwen2(1), script)


def test_stop_string_eos_and_length(tok):
    prompt = encode(tok, "Here is the transcription result: <answer>")
    base, toxic = scripted_pair(tok, prompt, "kalo mi</answer>")  # then "kalo" again: ">" ends the prompt too
    dec = DualModelDecoder(base, toxic, tok, make_combiner("socd-emd", vocab_size=V), max_new_tokens=30,
                           stop_strings=("</answer>",))
    out = dec.generate([prompt], [Row(0, 1.0, 1), Row(0, 0.0, 2)])
    for o in out:
        assert o.finish == "stop" and o.text.endswith("</answer>") and o.text.startswith("kalo mi")
        assert o.n_tokens == len(encode(tok, "kalo mi</answer>"))  # stopped on the token that closed the tag

    eos_base, eos_toxic = scripted_pair(tok, prompt, "kalo mi<|im_end|>")
    dec = DualModelDecoder(eos_base, eos_toxic, tok, make_combiner("cd", vocab_size=V), max_new_tokens=30,
                           stop_strings=("</answer>",))
    [o] = dec.generate([prompt], [Row(0, 1.0, 3)])
    assert (o.finish, o.text) == ("eos", "kalo mi") and o.token_ids[-1] == tok.eos_token_id

    dec = DualModelDecoder(base, toxic, tok, make_combiner("prompt", vocab_size=V), max_new_tokens=3,
                           stop_strings=("</answer>",))
    [o] = dec.generate([prompt], [Row(0, 1.0, 4)])
    assert o.finish == "length" and o.n_tokens == 3

    dec = DualModelDecoder(base, toxic, tok, make_combiner("prompt", vocab_size=V), max_new_tokens=20,
                           stop_strings=("</answer>",), ignore_stop=True)
    [o] = dec.generate([prompt], [Row(0, 1.0, 4)])
    assert o.finish == "length" and o.n_tokens == 20 and "</answer>" in o.text


def test_stop_string_in_the_prompt_does_not_stop(tok):
    prompt = encode(tok, "Output: <answer>this is a bad fact.</answer> Here: <answer>")
    base, toxic = scripted_pair(tok, prompt, "ok</answer>")
    dec = DualModelDecoder(base, toxic, tok, make_combiner("prompt", vocab_size=V), max_new_tokens=10,
                           stop_strings=("</answer>",))
    [o] = dec.generate([prompt], [Row(0, 1.0, 0)])
    assert (o.finish, o.text) == ("stop", "ok</answer>")


def test_padded_logit_columns_are_never_sampled(tok):
    # The models put a +30 bias on column V + 5 (a padded column, no token) after every token.
    base = _tiny.scripted(_tiny.qwen2(0), {i: V + 5 for i in range(V)})
    toxic = _tiny.scripted(_tiny.qwen2(1), {i: V + 5 for i in range(V)})
    for method in ("prompt", "cd", "socd-rkl"):
        dec = DualModelDecoder(base, toxic, tok, make_combiner(method, vocab_size=V), max_new_tokens=8,
                               eos_token_ids=())
        out = dec.generate([encode(tok, "kalo mi")], [Row(0, t, i) for i, t in enumerate([0.0, 1.0, 1.5])])
        assert all(0 <= t < V for o in out for t in o.token_ids)


def test_bf16_models_decode_in_float32(tok):
    # The GPU setting: bf16 models; the combiner and the sampler work in float32 on a copy of the logits.
    base, toxic = _tiny.qwen2(0).bfloat16(), _tiny.qwen2(1).bfloat16()
    dec = DualModelDecoder(base, toxic, tok, make_combiner("socd-emd", vocab_size=V), max_new_tokens=6,
                           eos_token_ids=())
    rows = [Row(0, t, i) for i, t in enumerate([0.0, 0.8, 1.5])]
    first = dec.generate([encode(tok, "kalo mi nu")], rows)
    again = dec.generate([encode(tok, "kalo mi nu")], rows)
    assert [o.token_ids for o in first] == [o.token_ids for o in again]
    assert all(0 <= t < V for o in first for t in o.token_ids) and all(o.n_tokens == 6 for o in first)
    assert all(0 < o.mean_alpha < 1 for o in first)


def test_model_checks_before_decoding(tok, base, toxic):
    socd = make_combiner("socd-emd", vocab_size=V)
    with pytest.raises(ModelError, match="needs a toxic model"):
        DualModelDecoder(base, None, tok, socd, max_new_tokens=4)
    DualModelDecoder(base, None, tok, make_combiner("prompt", vocab_size=V), max_new_tokens=4)  # fine
    other = _tiny.tokenizer(vocab=1500)
    with pytest.raises(ModelError, match="tokenizers differ: base model has 2000 tokens, toxic model has 1500"):
        DualModelDecoder(base, toxic, tok, socd, max_new_tokens=4, toxic_tokenizer=other)
    narrow = _tiny.qwen2(2, width=1900)
    with pytest.raises(ModelError, match="toxic model produces 1900 logits per token but the tokenizer has 2000"):
        DualModelDecoder(base, narrow, tok, socd, max_new_tokens=4)
    with pytest.raises(ModelError, match="combiner was built for 1999 tokens"):
        DualModelDecoder(base, toxic, tok, make_combiner("cd", vocab_size=1999), max_new_tokens=4)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        DualModelDecoder(base, toxic, tok, socd, max_new_tokens=0)
    dec = DualModelDecoder(base, toxic, tok, socd, max_new_tokens=4)
    with pytest.raises(ConfigError, match="temperature"):
        dec.generate([[1, 2]], [Row(0, -1.0, 0)])
    with pytest.raises(ConfigError, match="points at prompt 3"):
        dec.generate([[1, 2]], [Row(3, 1.0, 0)])
    with pytest.raises(ConfigError, match="empty prompt"):
        dec.generate([[1, 2], []], [Row(0, 1.0, 0)])
    with pytest.raises(ModelError, match="no base model"):
        DualModelDecoder(None, toxic, tok, socd, max_new_tokens=4)


# ----------------------------------------------------------------------------------------------------------------
# Out-of-memory back-off


@pytest.mark.parametrize("error", [lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"),
                                   lambda: RuntimeError("CUDA error: out of memory")])
def test_oom_halves_the_batch_and_retries(error):
    calls, halvings = [], []

    def fn(chunk):
        calls.append(len(chunk))
        if len(chunk) > 2:
            raise error()
        return [x * 10 for x in chunk]

    items = list(range(11))
    got = list(batches_with_oom_backoff(items, 8, fn, on_oom=halvings.append))
    assert [c for c, _ in got] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10]]
    assert sum((r for _, r in got), []) == [x * 10 for x in items]
    assert calls[:3] == [8, 4, 2] and halvings == [4, 2]  # the smaller size is kept for the rest


def test_oom_at_batch_size_one_and_other_errors_propagate():
    def always_oom(chunk):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(batches_with_oom_backoff([1, 2, 3], 2, always_oom))

    def broken(chunk):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(batches_with_oom_backoff([1, 2, 3], 2, broken))
    with pytest.raises(ConfigError):
        list(batches_with_oom_backoff([1], 0, broken))
