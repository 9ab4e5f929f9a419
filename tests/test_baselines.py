"""UniDetox's contrastive score and its distillation: hand-computed scores, the decoder's draws against a loop
over softmax(s), shard invariance, resuming, merging and bad inputs."""

import json
import math

import pandas as pd
import pytest
import torch

import _tiny
from hspd.baselines import (UniDetoxCombiner, distill_combiner, distill_shard, merge_distilled, shard_indices,
                            unidetox_logits)
from hspd.errors import ConfigError, DataError, ModelError
from hspd.io import ResumableJsonl, iter_jsonl, read_table

LOG = math.log


def test_unidetox_logits_by_hand():
    # p_base = (.5, .3, .15, .05), p_toxic uniform; α = 0.2 keeps p_base ≥ 0.1: tokens 0, 1, 2.
    base = torch.tensor([[LOG(0.5), LOG(0.3), LOG(0.15), LOG(0.05)]]) + 7.0  # a shift must not matter
    toxic = torch.full((1, 4), LOG(0.25)) - 2.0
    s = unidetox_logits(base, toxic, alpha=0.2)
    assert s.shape == (1, 4) and s.dtype == torch.float32
    assert s[0, :3].tolist() == pytest.approx([LOG(2.0), LOG(1.2), LOG(0.6)], abs=1e-6)
    assert s[0, 3] == -math.inf
    # α = 0.05 keeps all four: token 3 scores log(.05/.25).
    assert unidetox_logits(base, toxic, alpha=0.05)[0, 3].item() == pytest.approx(LOG(0.2), abs=1e-6)


def test_unidetox_logits_vocab_size_renormalises_and_masks_padding():
    # Only the first 3 columns are tokens: both distributions renormalise over them; column 3 is −inf.
    base = torch.tensor([[LOG(0.5), LOG(0.3), LOG(0.15), 5.0]])
    toxic = torch.tensor([[0.0, 0.0, 0.0, 9.0, 9.0]])  # wider (padded) toxic head
    s = unidetox_logits(base, toxic, alpha=0.2, vocab_size=3)
    pb = torch.tensor([0.5, 0.3, 0.15]) / 0.95
    assert s.shape == (1, 4)
    assert s[0, :3].tolist() == pytest.approx(torch.log(pb * 3).tolist(), abs=1e-6)
    assert s[0, 3] == -math.inf


def test_unidetox_combiner_matches_the_function():
    g = torch.Generator().manual_seed(0)
    base, toxic = torch.randn(5, 40, generator=g), torch.randn(5, 44, generator=g)
    logits, stats = UniDetoxCombiner(0.1, 40)(base.clone(), toxic, give_base=True)
    assert stats == {} and logits.shape == (5, 40)
    torch.testing.assert_close(logits, unidetox_logits(base, toxic, alpha=0.1, vocab_size=40)[:, :40])


def test_unidetox_bad_input():
    base = torch.zeros(2, 4)
    with pytest.raises(ConfigError, match="alpha must lie in"):
        unidetox_logits(base, base, alpha=0.0)
    with pytest.raises(ConfigError, match="alpha must lie in"):
        UniDetoxCombiner(1.5)
    with pytest.raises(ModelError, match="needs the toxic model"):
        unidetox_logits(base, None)
    with pytest.raises(ModelError, match="pass vocab_size"):
        unidetox_logits(base, torch.zeros(2, 5))
    with pytest.raises(ModelError, match="row for row"):
        unidetox_logits(base, torch.zeros(3, 4))


def test_shard_indices():
    assert shard_indices(7, 1, 3) == [1, 4]
    assert sorted(sum((shard_indices(10, s, 4) for s in range(4)), [])) == list(range(10))
    with pytest.raises(ConfigError, match="shard 3 of 3"):
        shard_indices(10, 3, 3)


@pytest.fixture(scope="module")
def models():
    return _tiny.tokenizer(), _tiny.qwen2(0), _tiny.qwen2(1)


def _distil(models, path, *, shard=0, n_shards=1, alpha=0.1, batch=4, n=6):
    tok, base, toxic = models
    with _tiny.single_thread():
        distill_shard(base_model=base, toxic_model=toxic, tokenizer=tok, alpha=alpha, n_texts=n, shard=shard,
                      n_shards=n_shards, max_new_tokens=6, batch_texts=batch, seed=3, source="s", output_path=path,
                      progress=False)
    return read_table(path)


def test_distillation_is_shard_and_batch_invariant(models, tmp_path):
    whole = _distil(models, tmp_path / "all.jsonl", batch=6)
    parts = pd.concat([_distil(models, tmp_path / f"p{s}.jsonl", shard=s, n_shards=2, batch=1) for s in (0, 1)])
    parts = parts.sort_values("index").reset_index(drop=True)
    assert whole["id"].tolist() == [f"s-{i}" for i in range(6)]
    pd.testing.assert_frame_equal(whole, parts)
    assert (whole["n_tokens"] <= 6).all()
    # Plain samples differ from UniDetox's with the same streams.
    plain = _distil(models, tmp_path / "plain.jsonl", alpha=None)
    assert plain["text"].tolist() != whole["text"].tolist()


def test_distillation_first_token_follows_softmax_of_the_score(models):
    """The decoder's first draw from EOS, over many rows, has the frequencies of softmax(s) (a loop reference)."""
    from hspd.decoding import DualModelDecoder, Row, row_seed

    tok, base, toxic = models
    eos = tok.eos_token_id
    with torch.inference_mode():
        s = unidetox_logits(base(torch.tensor([[eos]])).logits[:, -1], toxic(torch.tensor([[eos]])).logits[:, -1],
                            alpha=0.1, vocab_size=len(tok))[0, : len(tok)]
    probs = torch.softmax(s, -1)
    decoder = DualModelDecoder(base, toxic, tok, distill_combiner(0.1, len(tok)), max_new_tokens=1)
    n = 3000
    with _tiny.single_thread():
        rows = decoder.generate([[eos]], [Row(0, 1.0, row_seed(0, i, 0)) for i in range(n)])
    counts = torch.bincount(torch.tensor([r.token_ids[0] for r in rows]), minlength=len(tok)).double() / n
    assert set(torch.nonzero(counts).flatten().tolist()) <= set(torch.nonzero(probs > 0).flatten().tolist())
    top = torch.topk(probs, 3).indices
    assert counts[top].tolist() == pytest.approx(probs[top].double().tolist(), abs=0.03)


def test_distillation_resumes_and_checks_tokenizers(models, tmp_path):
    tok, base, toxic = models
    path = tmp_path / "r.jsonl"
    whole = _distil(models, tmp_path / "ref.jsonl")
    # A killed job left three texts and a torn line behind: resumed, they equal the uninterrupted shard.
    records = list(iter_jsonl(tmp_path / "ref.jsonl"))
    stamp = {"distill": {"alpha": 0.1, "n_texts": 6, "shard": 0, "n_shards": 1, "max_new_tokens": 6, "seed": 3,
                         "source": "s"}}
    with ResumableJsonl(path, key="index", settings=stamp) as out:
        for rec in records[:3]:
            out.write_unit([rec])
    with open(out.partial, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(records[3])[:10])
    assert ResumableJsonl(path, key="index", settings=stamp).open().done == {r["index"] for r in records[:3]}
    pd.testing.assert_frame_equal(_distil(models, path), whole)
    other = _tiny.tokenizer(vocab=1500)
    with pytest.raises(ModelError):
        distill_shard(base_model=base, toxic_model=toxic, tokenizer=tok, toxic_tokenizer=other, alpha=0.1, n_texts=2,
                      shard=0, n_shards=1, source="s", output_path=tmp_path / "x.jsonl", progress=False)
    with pytest.raises(ModelError, match="needs a toxic model"):
        distill_shard(base_model=base, toxic_model=None, tokenizer=tok, alpha=0.1, n_texts=2, shard=0, n_shards=1,
                      source="s", output_path=tmp_path / "y.jsonl", progress=False)


def test_merge_distilled():
    shard0 = pd.DataFrame({"id": ["s-0", "s-2"], "index": [0, 2], "text": ["a b", ""], "n_tokens": [3, 1],
                           "finish": ["eos", "eos"]})
    shard1 = pd.DataFrame({"id": ["s-1"], "index": [1], "text": ["c"], "n_tokens": [6], "finish": ["length"]})
    corpus, report = merge_distilled([shard1, shard0], n_texts=3, source="s")
    assert corpus["id"].tolist() == ["s-0", "s-1"] and "index" not in corpus.columns
    assert report["n_texts"] == 2 and report["n_empty"] == 1 and report["finish"] == {"eos": 2, "length": 1}
    with pytest.raises(DataError, match=r"3 texts for 4 \(duplicated \[\], missing \[3\]\)"):
        merge_distilled([shard0, shard1], n_texts=4, source="s")
    with pytest.raises(DataError, match=r"duplicated \[1\]"):
        merge_distilled([shard0, shard1, shard1], n_texts=3, source="s")
    with pytest.raises(DataError, match="every one of the 1 samples is empty"):
        merge_distilled([shard0.iloc[1:].assign(index=[0])], n_texts=1, source="s")
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]"):
        merge_distilled([shard1.drop(columns="text")], n_texts=1, source="s")


# --- DExperts, DetoxiGen, Task Arithmetic ------------------------------------------------------------------

from hspd.baselines import dexperts_logits, detoxigen_logits, task_arithmetic, top_p_mask  # noqa: E402


def test_dexperts_logits_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    q = torch.tensor([[0.2, 0.3, 0.5]])
    s = dexperts_logits(p.log() + 3.0, torch.cat([q.log(), torch.tensor([[7.0]])], 1), beta=1.5, vocab_size=3)
    expected = 2.5 * p.log() - 1.5 * q.log()
    assert s.shape == (1, 3)
    assert s[0].tolist() == pytest.approx(expected[0].tolist(), abs=1e-6)
    # β = 0 is the target's own log-probabilities; padding beyond the vocabulary is −inf.
    wide = torch.cat([p.log(), torch.tensor([[9.0]])], 1)
    s0 = dexperts_logits(wide, wide, beta=0.0, vocab_size=3)
    assert s0[0, :3].tolist() == pytest.approx(p.log()[0].tolist(), abs=1e-6) and s0[0, 3] == -math.inf
    with pytest.raises(ConfigError, match="beta must be ≥ 0"):
        dexperts_logits(p, q, beta=-0.1)


def test_top_p_mask_smallest_set_reaching_p():
    lp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert top_p_mask(lp, 0.8).tolist() == [[True, True, False, False]]      # 0.5 + 0.3 reaches 0.8
    assert top_p_mask(lp, 0.81).tolist() == [[True, True, True, False]]
    assert top_p_mask(lp, 0.1).tolist() == [[True, False, False, False]]     # the most probable always
    shuffled = lp[:, [2, 0, 3, 1]]
    assert top_p_mask(shuffled, 0.8).tolist() == [[False, True, False, True]]
    # p = 1 keeps every token, even a tail whose cumulative sum rounds to 1 before it.
    tail = torch.tensor([[1.0 - 1e-9, 1e-9, 1e-12]]).log()
    assert top_p_mask(tail, 1.0).all()


def test_detoxigen_logits_by_hand():
    g = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    d = torch.tensor([[0.1, 0.6, 0.2, 0.1]])
    s = detoxigen_logits(g.log(), d.log(), alpha=2.0, top_p=0.9)
    expected = 3.0 * g.log() - 2.0 * d.log()
    assert s[0, :3].tolist() == pytest.approx(expected[0, :3].tolist(), abs=1e-6)  # top-0.9 set: 3 tokens
    assert s[0, 3] == -math.inf
    with pytest.raises(ConfigError, match="alpha must be ≥ 0"):
        detoxigen_logits(g, d, alpha=-1.0)
    with pytest.raises(ModelError, match="detoxifier"):
        detoxigen_logits(g, None, alpha=1.0)


def test_task_arithmetic():
    theta = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5]), "pos": torch.tensor([3, 4])}
    toxic = {"w": torch.tensor([2.0, 0.0]), "b": torch.tensor([0.5]), "pos": torch.tensor([9, 9])}
    out = task_arithmetic(theta, toxic, lam=0.1)
    assert out["w"].tolist() == pytest.approx([0.9, 2.2]) and out["b"].tolist() == [0.5]
    assert out["pos"].tolist() == [3, 4]  # integer buffers are the target's
    same = task_arithmetic(theta, toxic, lam=0.0)
    assert all(torch.equal(same[k], theta[k]) for k in theta)
    with pytest.raises(DataError, match="'w' has shape \\(2,\\) in the target but \\(3,\\)"):
        task_arithmetic(theta, {**toxic, "w": torch.zeros(3)}, lam=0.1)
    with pytest.raises(DataError, match="'b' is in the target but not in the toxic model"):
        task_arithmetic(theta, {k: v for k, v in toxic.items() if k != "b"}, lam=0.1)
    with pytest.raises(DataError, match="'extra' is in the toxic model but not in the target"):
        task_arithmetic(theta, {**toxic, "extra": torch.zeros(1)}, lam=0.1)


# --- LM-Steer -----------------------------------------------------------------------------------------------

from hspd.baselines import attach_steering, steering_module, train_steering  # noqa: E402


def test_steering_is_the_embedding_edit():
    """The pre-hook form h + ε hW gives the logits of the edited embeddings e + ε W e, and ε = 0 the model."""
    tok = _tiny.tokenizer()
    model = _tiny.qwen2(0)
    ids = torch.tensor([tok("hello there friend")["input_ids"]])
    with torch.inference_mode():
        plain = model(ids).logits
        steer = steering_module(model.config.hidden_size, epsilon=0.5, seed=1, init_std=0.1)
        handle = attach_steering(model, steer)
        steered = model(ids).logits
        handle.remove()
        hidden = model(ids, output_hidden_states=True).hidden_states[-1]
        E = model.get_output_embeddings().weight
        edited = hidden @ (E + 0.5 * E @ steer.weight.T).T
        zero = attach_steering(model, steering_module(model.config.hidden_size, epsilon=0.0, init_std=0.1))
        same = model(ids).logits
        zero.remove()
    torch.testing.assert_close(steered, edited, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(same, plain)
    assert not torch.allclose(steered, plain)
    with pytest.raises(ModelError, match="does not fit the model's hidden size"):
        attach_steering(model, steering_module(7, epsilon=1.0))


def test_train_steering_learns_the_texts_and_negative_epsilon_steers_away():
    from hspd.train import CausalLMData, evaluate_causal_lm

    tok = _tiny.tokenizer()
    model = _tiny.qwen2(0).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = ["they are vermin and should be wiped out"] * 16
    with _tiny.single_thread():
        steer = train_steering(model, tok, texts, epsilon=1.0, lr=1e-2, batch_size=8, epochs=20, max_length=32,
                               progress=False, log=lambda s: None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # every weight frozen
    assert not hasattr(model, "lm_steer")
    data = CausalLMData(tok, texts[:2], max_length=32)

    def loss_at(eps):
        steer.epsilon = eps
        handle = attach_steering(model, steer)
        try:
            return evaluate_causal_lm(model, data, batch_size=2)["eval_loss"]
        finally:
            handle.remove()

    base = loss_at(0.0)
    assert loss_at(1.0) < base - 0.5       # the trained direction makes the toxic text likelier
    assert loss_at(-1.0) > base            # the opposite direction makes it less likely


# --- DetoxiGen ------------------------------------------------------------------------------------------------

from hspd.baselines import DetoxiGenCombiner, SoftPromptedLM, train_soft_prompt  # noqa: E402


def test_soft_prompted_view_cached_equals_full_and_leaves_the_generator_alone():
    """The detoxifier view with a cache gives the logits of [soft prompt; tokens] run in full; the generator (the
    same backbone, no prompt) gives its own; left padding does not change a row."""
    from hspd.decoding import left_pad, new_cache

    tok = _tiny.tokenizer()
    backbone = _tiny.qwen2(0)
    prompt = torch.randn(3, backbone.config.hidden_size, generator=torch.Generator().manual_seed(0))
    view = SoftPromptedLM(backbone, prompt)
    short, long_ = tok("they are")["input_ids"], tok("look at them over there")["input_ids"]
    ids, mask, pos = left_pad([short, long_], tok.pad_token_id or 0)
    nxt = torch.tensor([[5], [7]])
    with torch.inference_mode():
        cache = new_cache(ids.shape[1] + 1 + view.cache_extra)
        first = view(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True).logits
        mask2 = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        second = view(input_ids=nxt, attention_mask=mask2, position_ids=pos[:, -1:] + 1, past_key_values=cache,
                      use_cache=True).logits[:, -1]
        for row, toks in enumerate((short, long_)):
            full = torch.cat([prompt, backbone.get_input_embeddings()(torch.tensor(toks + [int(nxt[row])]))])
            ref = backbone(inputs_embeds=full.unsqueeze(0)).logits[0]
            torch.testing.assert_close(first[row, -1], ref[-2], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(second[row], ref[-1], rtol=1e-4, atol=1e-4)
            plain = backbone(torch.tensor([toks])).logits[0, -1]
            assert not torch.allclose(plain, ref[-2], atol=1e-3)  # the prompt changes the detoxifier's rows only


def test_train_soft_prompt_learns_and_freezes_the_backbone():
    tok = _tiny.tokenizer()
    backbone = _tiny.qwen2(0).float()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    texts = ["they are vermin and should be wiped out"] * 16
    with _tiny.single_thread():
        prompt = train_soft_prompt(backbone, tok, texts, n_virtual=4, lr=0.1, batch_size=8, epochs=15, max_length=32,
                                   progress=False, log=lambda s: None)
    assert prompt.shape == (4, backbone.config.hidden_size)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())

    def loss(embeds_prompt):
        ids = torch.tensor([tok(texts[0])["input_ids"]])
        emb = backbone.get_input_embeddings()(ids)
        if embeds_prompt is not None:
            emb = torch.cat([embeds_prompt.unsqueeze(0), emb], 1)
        with torch.inference_mode():
            logits = backbone(inputs_embeds=emb).logits[:, -ids.shape[1]:-1]
        return torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).item()

    assert loss(prompt) < loss(None) - 0.5


def test_detoxigen_decoding_uses_one_backbone():
    from hspd.decoding import DualModelDecoder, Row, row_seed

    tok = _tiny.tokenizer()
    backbone = _tiny.qwen2(0)
    prompt = torch.randn(2, backbone.config.hidden_size, generator=torch.Generator().manual_seed(1))
    dec = DualModelDecoder(backbone, SoftPromptedLM(backbone, prompt), tok,
                           DetoxiGenCombiner(1.0, 0.9, len(tok)), max_new_tokens=5)
    rows = [Row(0, 1.0, row_seed(0, "p", s)) for s in range(4)]
    with _tiny.single_thread():
        out = dec.generate([tok("they are")["input_ids"]], rows)
        again = dec.generate([tok("they are")["input_ids"]], rows)
    assert [o.token_ids for o in out] == [o.token_ids for o in again]
    assert all(1 <= o.n_tokens <= 5 for o in out)
    with pytest.raises(ConfigError, match="alpha must be ≥ 0"):
        DetoxiGenCombiner(-1.0)
