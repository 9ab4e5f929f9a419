"""ToxiGen continuations, conditional perplexity and MMLU on tiny GPT2 / Llama models (CPU, seconds)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import _tiny
import _tiny_eval as tiny
from hspd import evaluate as E
from hspd.errors import DataError, ModelError
from hspd.models import encode_pairs

LONG = " ".join(tiny.WORDS * 3)  # longer than the tiny GPT2's 64 positions
PROMPTS = pd.DataFrame({
    "id": [10, 11, 12, 13, 14],
    "text": ["the people who live there", "women men folks", LONG, "question answer", "river mountain stone"],
    "category": ["a", "b", "c", "d", "e"],  # extra columns are ignored
})


@pytest.fixture(scope="module")
def gpt2():
    return tiny.gpt2(), tiny.tokenizer()


@pytest.fixture(scope="module")
def llama():
    return tiny.llama(), tiny.tokenizer(add_bos=True)


def sp_tokenizer():
    """The demo's SentencePiece-style tokenizer (LLaMA-2's layout) trained on the toy corpus; at this size every
    word of ``tiny.WORDS`` is one piece (the tests check the ones they rely on)."""
    from hspd.demo.tokenizer import build_demo_sp_tokenizer

    return build_demo_sp_tokenizer(tiny.corpus(), vocab_size=450)


def sp_llama_model(tok, seed: int = 0, max_position_embeddings: int = 128):
    """A random 2-layer Llama for ``tok`` (BOS ``<s>`` = 1, EOS and pad ``</s>`` = 2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=max_position_embeddings,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def sp_llama():
    tok = sp_tokenizer()
    return sp_llama_model(tok), tok


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def generate(model_tok, path, prompts=PROMPTS, **kw):
    model, tok = model_tok
    kw = {"seed": 42, "batch_prompts": 2, "progress": False, **kw}
    return E.toxigen_generate(model, tok, prompts, output_path=path, **kw)


# --- helpers ----------------------------------------------------------------------------------------------

def test_prompt_seed_depends_on_seed_and_id_only():
    assert E.prompt_seed(42, 7) == E.prompt_seed(42, 7)
    assert len({E.prompt_seed(42, 7), E.prompt_seed(43, 7), E.prompt_seed(42, 8)}) == 3
    assert 0 <= E.prompt_seed(42, "x") < 2**63


def test_context_length(gpt2, llama):
    assert E.context_length(gpt2[0]) == 64 and E.context_length(llama[0]) == 128


def test_encode_prompts_left_truncates_and_keeps_bos():
    tok = tiny.tokenizer(add_bos=True)
    full = tok(LONG)["input_ids"]
    ids, n = E.encode_prompts(tok, [LONG, "water"], max_length=10)
    assert n == 1
    assert ids[0] == [tok.bos_token_id] + full[-9:]  # the text's tail, BOS kept in front
    assert ids[1] == tok("water")["input_ids"]


def test_per_prompt_sampler_applies_top_p_like_hf():
    # probabilities 0.5, 0.3, 0.15, 0.05: nucleus 0.9 keeps the first three
    import torch
    from transformers import TopPLogitsWarper

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    out = E.PerPromptSampler(gens, 2000, [TopPLogitsWarper(0.9)])(None, logits)
    assert torch.isfinite(out).sum(1).eq(1).all()  # one token kept per row
    picks = out.argmax(-1)
    counts = torch.bincount(picks, minlength=4).tolist()
    assert counts[3] == 0 and all(c > 0 for c in counts[:3])
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.95, abs=0.03)


def test_per_prompt_sampler_streams_do_not_depend_on_the_batch():
    import torch

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    together = E.PerPromptSampler([torch.Generator().manual_seed(s) for s in (1, 2)], 3)(None, logits)
    alone = E.PerPromptSampler([torch.Generator().manual_seed(2)], 3)(None, logits[3:])
    assert torch.equal(together[3:].argmax(-1), alone.argmax(-1))
    with pytest.raises(ValueError, match="6 rows for 1 prompts"):
        E.PerPromptSampler([torch.Generator()], 3)(None, logits)


# --- ToxiGen continuations --------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_toxigen_generate_protocol(which, request, tmp_path, caplog):
    model, tok = request.getfixturevalue(which)
    with caplog.at_level("WARNING"):
        path = generate((model, tok), tmp_path / "gen.jsonl", max_new_tokens=20)
    recs = read_jsonl(path)
    assert len(recs) == 25 * len(PROMPTS)
    assert [r["id"] for r in recs[::25]] == PROMPTS["id"].tolist()
    assert [r["sample"] for r in recs[:25]] == list(range(25))
    assert all(0 <= r["n_tokens"] <= 20 for r in recs)
    assert any(r["n_tokens"] == 20 for r in recs)
    for r in recs:
        text = PROMPTS.set_index("id").loc[r["id"], "text"]
        assert not r["continuation"].startswith(text[:10])  # the prompt is sliced off
        assert "<|endoftext|>" not in r["continuation"] and "<s>" not in r["continuation"]
    if which == "gpt2":  # 64 positions − 20 new tokens: the long prompt is left-truncated
        assert "1 of 5 prompts exceed 44 tokens" in caplog.text
    assert not (tmp_path / "gen.jsonl.partial").exists()


def test_toxigen_generate_top_k_1_is_greedy(gpt2, tmp_path):
    model, tok = gpt2
    path = generate(gpt2, tmp_path / "g.jsonl", prompts=PROMPTS.iloc[:2], top_k=1, n_samples=3, max_new_tokens=8)
    recs = read_jsonl(path)
    for k, text in enumerate(PROMPTS["text"].iloc[:2]):
        enc = tok(text, return_tensors="pt")
        greedy = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)
        new = greedy[0, enc["input_ids"].shape[1]:].tolist()
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        assert {r["continuation"] for r in recs[3 * k:3 * k + 3]} == {tok.decode(new, skip_special_tokens=True)}


def test_sample_continuations_keep_the_leading_space_with_a_sentencepiece_target(sp_llama):
    """A scripted Llama writes "▁who ▁live ▁there </s>" after "the people": the continuation is " who live there"
    (decoding the new ids alone, LLaMA's decoder would strip its first space)."""
    _, tok = sp_llama
    prompt = tok("the people")["input_ids"]
    who, live, there = tok.convert_tokens_to_ids(["▁who", "▁live", "▁there"])
    model = _tiny.scripted(sp_llama_model(tok), {prompt[-1]: who, who: live, live: there, there: tok.eos_token_id})
    out = E.sample_continuations(model, tok, [prompt], [7], n_samples=3, max_new_tokens=6)
    assert out == [[(" who live there", 3)] * 3]
    assert tok.decode([who, live, there], skip_special_tokens=True) == "who live there"  # the old way
    assert "the people" + out[0][0][0] == tok.decode(prompt + [who, live, there, tok.eos_token_id],
                                                     skip_special_tokens=True)


@pytest.mark.parametrize("which", ["gpt2", "sp_llama"])
def test_sample_continuations_text_is_the_generated_text_minus_the_prompt(which, request, monkeypatch):
    """Every sample, with the generated ids captured: prompt text + continuation = decode(prompt + new ids); for
    a byte-level tokenizer that is decode(new ids), as before."""
    model, tok = request.getfixturevalue(which)
    captured = []
    real_generate = model.generate

    def generate(**kw):
        out = real_generate(**kw)
        captured.append(out[:, kw["input_ids"].shape[1]:].tolist())
        return out

    monkeypatch.setattr(model, "generate", generate)
    ids, _ = E.encode_prompts(tok, PROMPTS["text"].tolist()[:2] + ["river"], max_length=40)
    out = E.sample_continuations(model, tok, ids, [1, 2, 3], n_samples=4, max_new_tokens=10)
    (new,) = captured
    n_changed = 0
    for g, p in enumerate(ids):
        for (text, n), full_row in zip(out[g], new[4 * g:4 * g + 4]):
            row = full_row[:n]  # the ids before EOS
            assert tok.eos_token_id not in row and (n == 10 or full_row[n] == tok.eos_token_id)
            assert tok.decode(p, skip_special_tokens=True) + text == tok.decode(p + row, skip_special_tokens=True)
            alone = tok.decode(row, skip_special_tokens=True)
            if which == "gpt2":
                assert text == alone
            n_changed += text != alone
    if which == "sp_llama":
        assert n_changed > 0  # some samples start with a word-start token: the old way lost their space


def test_continuation_text_falls_back_to_the_new_ids():
    class Tok:  # a decoder whose prompt text changes once something follows it
        def decode(self, ids, skip_special_tokens=False):
            return {(1,): "ab", (1, 2): "aXc", (2,): "c"}[tuple(ids)]

    assert E._continuation_text(Tok(), [1], "ab", [2]) == "c"


def test_toxigen_generate_deterministic_per_seed_and_independent_of_batching(gpt2, tmp_path):
    a = read_jsonl(generate(gpt2, tmp_path / "a.jsonl", batch_prompts=2))
    b = read_jsonl(generate(gpt2, tmp_path / "b.jsonl", batch_prompts=2))
    c = read_jsonl(generate(gpt2, tmp_path / "c.jsonl", batch_prompts=5))
    d = read_jsonl(generate(gpt2, tmp_path / "d.jsonl", batch_prompts=2, seed=43))
    assert a == b
    assert a == c  # a prompt's random stream does not depend on its batch (fp32 on CPU: identical samples)
    assert [r["continuation"] for r in a] != [r["continuation"] for r in d]
    assert len({r["continuation"] for r in a[:25]}) > 1  # samples of one prompt differ


def test_toxigen_generate_resume_equals_uninterrupted(llama, tmp_path, monkeypatch):
    from hspd.io import ResumableJsonl

    full = generate(llama, tmp_path / "full.jsonl").read_bytes()

    real = ResumableJsonl.write_unit
    calls = {"n": 0}

    def killed_after_three(self, records):
        if calls["n"] == 3:  # in the middle of the second batch of two prompts
            raise KeyboardInterrupt("job killed")
        calls["n"] += 1
        real(self, records)

    out = tmp_path / "resumed.jsonl"
    monkeypatch.setattr(ResumableJsonl, "write_unit", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        generate(llama, out)
    monkeypatch.setattr(ResumableJsonl, "write_unit", real)
    partial = tmp_path / "resumed.jsonl.partial"
    assert not out.exists() and len(read_jsonl(partial)) == 3 * 25
    with open(partial, "a", encoding="utf-8") as fh:
        fh.write('{"id": 13, "sample": 0, "contin')  # a torn line from the kill
    assert generate(llama, out).read_bytes() == full


def test_toxigen_partial_of_other_settings_is_discarded(llama, tmp_path, monkeypatch, caplog):
    """A killed job resumed after max_new_tokens (or the model, through `settings`) changed: nothing of the old
    partial is mixed in; the output equals a fresh run with the new settings."""
    from hspd.io import ResumableJsonl

    real = ResumableJsonl.write_unit

    def killed_after_two(self, records, unit=None):
        if len(self.done) == 2:
            raise KeyboardInterrupt("job killed")
        real(self, records, unit)

    out = tmp_path / "g.jsonl"
    monkeypatch.setattr(ResumableJsonl, "write_unit", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate(llama, out, max_new_tokens=20, settings={"model": "a"})
    monkeypatch.setattr(ResumableJsonl, "write_unit", real)
    fresh = generate(llama, tmp_path / "fresh.jsonl", max_new_tokens=6, settings={"model": "a"}).read_bytes()
    assert generate(llama, out, max_new_tokens=6, settings={"model": "a"}).read_bytes() == fresh
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(ResumableJsonl, "write_unit", killed_after_two)
        generate(llama, tmp_path / "h.jsonl", settings={"model": "a"})
    monkeypatch.setattr(ResumableJsonl, "write_unit", real)
    with caplog.at_level("WARNING", logger="hspd"):
        generate(llama, tmp_path / "h.jsonl", settings={"model": "b"})  # another model: redone whole
    assert "h.jsonl.partial was made with other settings: discarded" in caplog.text


@pytest.mark.parametrize("build", [tiny.opt, tiny.falcon, lambda: tiny.falcon(alibi=True), tiny.qwen2],
                         ids=["opt", "falcon", "falcon-alibi", "qwen2"])
def test_other_architectures(build, tmp_path):
    """OPT, Falcon (rotary and ALiBi) and Qwen2: protocol, batching independence, perplexity vs reference."""
    model, tok = build(), tiny.tokenizer()
    a = read_jsonl(generate((model, tok), tmp_path / "a.jsonl", batch_prompts=5))
    b = read_jsonl(generate((model, tok), tmp_path / "b.jsonl", batch_prompts=1))
    assert a == b and len(a) == 25 * len(PROMPTS) and max(r["n_tokens"] for r in a) == 20
    got = E.conditional_perplexity(model, tok, *PAIRS, batch_size=4)
    np.testing.assert_allclose(got, [reference_ppl(model, tok, p, c) for p, c in zip(*PAIRS)], rtol=1e-4)


def test_toxigen_generate_bad_input(gpt2, tmp_path):
    out = tmp_path / "x.jsonl"
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]"):
        generate(gpt2, out, prompts=PROMPTS.drop(columns="text"))
    with pytest.raises(DataError, match="id 10 appears more than once"):
        generate(gpt2, out, prompts=pd.concat([PROMPTS, PROMPTS.iloc[:1]]))
    with pytest.raises(DataError, match="row id 11 has an empty"):
        generate(gpt2, out, prompts=PROMPTS.assign(text=["a", "  ", "b", "c", "d"]))
    with pytest.raises(DataError, match="n_samples"):
        generate(gpt2, out, n_samples=0)
    with pytest.raises(DataError, match="top_p"):
        generate(gpt2, out, top_p=0.0)
    with pytest.raises(ModelError, match="64 positions"):
        generate(gpt2, out, max_new_tokens=64)
    assert not out.exists() and not (tmp_path / "x.jsonl.partial").exists()


# --- Conditional perplexity -------------------------------------------------------------------------------

PAIRS = (["the people", "water fire earth", "women", "question answer science", "the"],
         [" who live there", " stone", "", " history language music water", " city"])


def log_prob(model, ids):
    """``log p(ids[1:] | ids[0])``: the sum over the sequence of each token's log-probability given those before."""
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)))


def reference_ppl(model, tok, prompt, continuation):
    """One pair, unbatched, straight from SPEC §5: ``prompt + continuation`` tokenised as one string (whose ids
    start with the prompt's own here), ``exp(−(log p(full) − log p(prompt)) / n_scored)``."""
    full, p = tok(prompt + continuation)["input_ids"], tok(prompt)["input_ids"]
    assert full[:len(p)] == p, "reference_ppl covers pairs without a merge across the boundary"
    n = len(full) - len(p)
    if not n:
        return math.nan
    return math.exp(-(log_prob(model, full) - log_prob(model, p)) / n)


@pytest.mark.parametrize("which", ["gpt2", "llama", "sp_llama"])
def test_conditional_perplexity_batched_equals_per_pair_reference(which, request):
    model, tok = request.getfixturevalue(which)
    batched = E.conditional_perplexity(model, tok, *PAIRS, batch_size=3)
    expected = [reference_ppl(model, tok, p, c) for p, c in zip(*PAIRS)]
    assert math.isnan(batched[2])
    np.testing.assert_allclose(batched, expected, rtol=1e-4)
    one = E.conditional_perplexity(model, tok, *PAIRS, batch_size=1)
    np.testing.assert_allclose(batched, one, rtol=1e-5)


def test_conditional_perplexity_by_hand_stepwise(llama):
    """Token by token through prefixes: p(c_j | prompt, c_<j) from the last logit of each prefix."""
    import torch

    model, tok = llama
    p = tok("the people")["input_ids"]
    full = tok("the people who live there")["input_ids"]
    assert full[:len(p)] == p
    c = full[len(p):]
    nll = 0.0
    with torch.no_grad():
        for j, t in enumerate(c):
            last = model(torch.tensor([p + c[:j]])).logits[0, -1].double()
            nll -= torch.log_softmax(last, -1)[t].item()
    got = E.conditional_perplexity(model, tok, ["the people"], [" who live there"])
    assert got[0] == pytest.approx(math.exp(nll / len(c)), rel=1e-4)


def test_conditional_perplexity_uniform_model_is_vocab_size():
    import torch

    model, tok = tiny.gpt2(), tiny.tokenizer()
    with torch.no_grad():  # a zero final layer norm makes every logit 0: a uniform distribution
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
    got = E.conditional_perplexity(model, tok, *PAIRS, batch_size=2)
    np.testing.assert_allclose(got[[0, 1, 3, 4]], model.config.vocab_size, rtol=1e-5)


def test_conditional_perplexity_truncates_long_prompts_on_the_left(gpt2):
    model, tok = gpt2
    c = tok(LONG + " who live")["input_ids"][len(tok(LONG)["input_ids"]):]
    assert c == tok(" who live")["input_ids"]  # byte-level, no BOS: the same ids as the continuation alone
    kept = tok.decode(tok(LONG)["input_ids"][-(64 - len(c)):])
    got = E.conditional_perplexity(model, tok, [LONG], [" who live"])
    assert got[0] == pytest.approx(reference_ppl(model, tok, kept, " who live"), rel=1e-4)


def test_conditional_perplexity_bad_input(gpt2):
    model, tok = gpt2
    with pytest.raises(DataError, match="2 prompts but 1 continuations"):
        E.conditional_perplexity(model, tok, ["a", "b"], ["c"])
    with pytest.raises(DataError, match="continuation 0 is float"):
        E.conditional_perplexity(model, tok, ["a"], [float("nan")])
    with pytest.raises(DataError, match="prompt 1 is NoneType"):
        E.conditional_perplexity(model, tok, ["a", None], ["b", "c"])
    with pytest.raises(DataError, match="batch_size"):
        E.conditional_perplexity(model, tok, ["a"], ["b"], batch_size=0)


def tokens(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_sp_tokenizer_pieces(sp_llama):
    _, tok = sp_llama  # what the hand-written expectations below rely on
    assert tokens(tok, tok("the people who live there")["input_ids"]) == [
        "<s>", "▁the", "▁people", "▁who", "▁live", "▁there"]
    assert tok.tokenize("the peo") == ["▁the", "▁pe", "o"]
    assert tok.tokenize("the ") == ["▁the", "▁"]


def test_encode_pairs_scores_the_tokens_after_the_prompts_boundary(sp_llama):
    _, tok = sp_llama
    prompts = ["the people", "the peo", "the ", "", "the people"]
    continuations = [" who live there", "ple", "people", "the people", ""]
    got = [(tokens(tok, c), tokens(tok, s)) for c, s in encode_pairs(tok, prompts, continuations)]
    assert got == [
        (["<s>", "▁the", "▁people"], ["▁who", "▁live", "▁there"]),
        # "▁people" straddles the boundary (the prompt alone ends "▁pe", "o"): it is scored, context before it
        (["<s>", "▁the"], ["▁people"]),
        # the prompt alone ends with a "▁" of its own; in the full string that space starts "▁people"
        (["<s>", "▁the"], ["▁people"]),
        (["<s>"], ["▁the", "▁people"]),  # an empty prompt conditions on BOS
        (["<s>", "▁the", "▁people"], []),
    ]
    # The old way, the continuation tokenised alone, scores a word-start "▁" that is not in the text.
    alone = tok(" who live there", add_special_tokens=False)["input_ids"]
    assert tokens(tok, alone) == ["▁", "▁who", "▁live", "▁there"]


def test_encode_pairs_byte_level_and_no_bos():
    from _tiny_tok import tiny_tokenizer

    tok = tiny.tokenizer()  # GPT2 style: nothing added, <|endoftext|> is BOS
    assert encode_pairs(tok, ["", "the people"], ["the city", " who"]) == [
        ([tok.bos_token_id], tok("the city")["input_ids"]),
        (tok("the people")["input_ids"], tok(" who")["input_ids"])]
    no_bos = tiny_tokenizer()
    assert no_bos.bos_token_id is None
    with pytest.raises(DataError, match="pair 1: no prompt token to condition on .* no BOS token"):
        encode_pairs(no_bos, ["the", ""], [" weather", "the weather"])


def test_encode_pairs_left_truncates_the_context_and_keeps_bos(sp_llama):
    _, tok = sp_llama
    context, scored = encode_pairs(tok, [LONG], [" who live"])[0]
    assert tokens(tok, scored) == ["▁who", "▁live"] and context == tok(LONG)["input_ids"]
    cut = encode_pairs(tok, [LONG], [" who live"], max_length=10)[0]
    assert cut == ([tok.bos_token_id] + context[-7:], scored)  # 1 + 7 + 2 = 10
    assert encode_pairs(tok, [LONG], [" who live"], max_length=3)[0] == ([tok.bos_token_id], scored)
    with pytest.raises(DataError, match="pair 0: the continuation alone has 2 tokens, the context 2"):
        encode_pairs(tok, [LONG], [" who live"], max_length=2)


def test_conditional_perplexity_is_the_loss_difference(sp_llama):
    """Sum of the scored tokens' log-probs = log p(prompt + continuation) − log p(prompt), each string
    tokenised on its own (UniDetox's loss difference); by hand with two forward passes per pair."""
    model, tok = sp_llama
    prompts = ["the people", "women men", "question", "", "river mountain stone"]
    conts = [" who live there", " folks from many places", " answer science history", "water fire",
             "\nthe city"]
    got = E.conditional_perplexity(model, tok, prompts, conts, batch_size=2, progress=False)
    for ppl, p, c in zip(got, prompts, conts):
        full, alone = tok(p + c)["input_ids"], tok(p)["input_ids"]
        n = len(full) - len(alone)
        assert full[:len(alone)] == alone and n > 0
        assert -n * math.log(ppl) == pytest.approx(log_prob(model, full) - log_prob(model, alone), rel=1e-4)


def test_conditional_perplexity_straddling_token(sp_llama):
    model, tok = sp_llama
    ids = tok("the people")["input_ids"]  # <s> ▁the ▁people: "▁people" given "<s> ▁the", one token
    expected = math.exp(-(log_prob(model, ids) - log_prob(model, ids[:2])))
    got = E.conditional_perplexity(model, tok, ["the peo", "the "], ["ple", "people"], progress=False)
    np.testing.assert_allclose(got, [expected, expected], rtol=1e-4)


def test_conditional_perplexity_differs_from_tokenising_the_continuation_alone(sp_llama):
    model, tok = sp_llama
    p = tok("the people")["input_ids"]
    old = tok(" who live there", add_special_tokens=False)["input_ids"]  # ▁ ▁who ▁live ▁there
    new = tok("the people who live there")["input_ids"][len(p):]  # ▁who ▁live ▁there
    assert old[1:] == new and len(old) == 4
    old_ppl = math.exp(-(log_prob(model, p + old) - log_prob(model, p)) / len(old))
    new_ppl = math.exp(-(log_prob(model, p + new) - log_prob(model, p)) / len(new))
    got = E.conditional_perplexity(model, tok, ["the people"], [" who live there"], progress=False)[0]
    assert got == pytest.approx(new_ppl, rel=1e-4)
    assert abs(got - old_ppl) > 1e-2 * got


# --- MMLU -------------------------------------------------------------------------------------------------

def write_mmlu(path, n, **override):
    rows = [{"question": f"Which one is {w}?", "subject": "toy", "choices": ["river", "stone", "fire", "water"],
             "answer": i % 4, **override} for i, w in enumerate(tiny.WORDS[:n])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mmlu_task_yaml_is_valid_yaml(tmp_path):
    import yaml

    cfg = yaml.safe_load(E.mmlu_task_yaml(tmp_path / "t.jsonl", tmp_path / "d.jsonl"))
    assert cfg["doc_to_text"].endswith("\nD. {{choices[3]}}\nAnswer:")
    assert cfg["doc_to_choice"] == ["A", "B", "C", "D"]
    assert cfg["dataset_kwargs"]["data_files"]["dev"] == str((tmp_path / "d.jsonl").resolve())


@pytest.mark.slow
def test_run_mmlu_local_task(gpt2, tmp_path):
    model, tok = gpt2
    spec = {"local": write_mmlu(tmp_path / "test.jsonl", 8), "dev": write_mmlu(tmp_path / "dev.jsonl", 3)}
    out = E.run_mmlu(model, tok, task_spec=spec, num_fewshot=1, batch_size=4)
    assert 0.0 <= out["acc"] <= 1.0 and out["n"] == 8 and out["num_fewshot"] == 1
    assert out["acc_stderr"] > 0 and out["task"].startswith("local:")


def test_run_mmlu_bad_input(gpt2, tmp_path):
    model, tok = gpt2
    dev = write_mmlu(tmp_path / "dev.jsonl", 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b", "c", "d"]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: missing column\(s\) \['answer'\]"):
        E.run_mmlu(model, tok, task_spec={"local": bad, "dev": dev}, num_fewshot=1)
    with pytest.raises(DataError, match="row 0, column `answer`"):
        E.run_mmlu(model, tok, task_spec={"local": write_mmlu(bad, 2, answer=4), "dev": dev}, num_fewshot=1)
    with pytest.raises(DataError, match="row 0, column `choices`"):
        E.run_mmlu(model, tok, task_spec={"local": write_mmlu(bad, 2, choices=["a"]), "dev": dev}, num_fewshot=1)
    test = write_mmlu(tmp_path / "test.jsonl", 4)
    with pytest.raises(DataError, match="3 questions, fewer than 5 shots"):
        E.run_mmlu(model, tok, task_spec={"local": test, "dev": dev}, num_fewshot=5)
    with pytest.raises(DataError, match="needs `dev`"):
        E.run_mmlu(model, tok, task_spec={"local": test}, num_fewshot=1)
    with pytest.raises(DataError, match="needs `task` or `local`"):
        E.run_mmlu(model, tok, task_spec={}, num_fewshot=1)


# --- two-model systems (DExperts, DetoxiGen): the engine's sampling, lm-eval on combined scores -------------

def dual_decoder(target, anti, tok, beta, top_p=0.9):
    from hspd.treatments import dexperts_decoder

    return dexperts_decoder(target, anti, tok, beta, max_new_tokens=6, top_p=top_p, top_k=None)


def test_toxigen_generate_with_a_two_model_system(gpt2, tmp_path):
    model, tok = gpt2
    anti = tiny.gpt2(seed=1)
    dec = dual_decoder(model, anti, tok, beta=1.0)
    one = read_jsonl(generate(gpt2, tmp_path / "a.jsonl", decoder=dec, n_samples=4, max_new_tokens=6))
    again = read_jsonl(generate(gpt2, tmp_path / "b.jsonl", decoder=dec, n_samples=4, max_new_tokens=6,
                                batch_prompts=5))
    assert one == again  # a prompt's samples do not depend on the batch
    assert [r["sample"] for r in one[:4]] == [0, 1, 2, 3] and len(one) == 4 * len(PROMPTS)
    assert all(0 <= r["n_tokens"] <= 6 for r in one)
    # The continuation is the generated text after the prompt's.
    assert any(r["continuation"] for r in one)
    other_seed = read_jsonl(generate(gpt2, tmp_path / "c.jsonl", decoder=dec, n_samples=4, max_new_tokens=6, seed=43))
    assert [r["continuation"] for r in other_seed] != [r["continuation"] for r in one]


@pytest.mark.slow
def test_run_mmlu_on_combined_scores(gpt2, tmp_path):
    """lm-eval reads the system's scores: DExperts at β = 0 is the target's own MMLU, and scores that favour the
    answer letter A answer every question A."""
    import functools

    from hspd.baselines import dexperts_logits, sequence_scores

    model, tok = gpt2
    other = tiny.gpt2(seed=3)
    spec = {"local": write_mmlu(tmp_path / "test.jsonl", 12, answer=0), "dev": write_mmlu(tmp_path / "dev.jsonl", 3)}
    run = functools.partial(E.run_mmlu, tokenizer=tok, task_spec=spec, num_fewshot=1, batch_size=4)
    own = run(model)
    beta0 = run(model, combine=sequence_scores(functools.partial(dexperts_logits, beta=0.0, vocab_size=len(tok)),
                                               model, other))
    letter_a = tok(" A", add_special_tokens=False)["input_ids"]

    def favour_a(a, b):
        out = a.clone()
        out[:, letter_a] += 50.0
        return out

    assert own["acc"] < 1.0
    assert beta0["acc"] == own["acc"]
    assert run(model, combine=sequence_scores(favour_a, model, other))["acc"] == 1.0
