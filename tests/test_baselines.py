"""UniDetox's contrastive score and its distillation: hand-computed scores, the decoder's draws against a loop
over softmax(s), shard invariance, resuming, merging and bad inputs."""

import math

import pandas as pd
import pytest
import torch

import _tiny
from hspd.baselines import (UniDetoxCombiner, distill_combiner, distill_shard, merge_distilled, shard_indices,
                            unidetox_logits)
from hspd.errors import ConfigError, DataError, ModelError
from hspd.io import read_table

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
    # A killed job left three texts and a torn line behind.
    lines = (tmp_path / "ref.jsonl").read_text().splitlines(keepends=True)
    path.with_name("r.jsonl.partial").write_text("".join(lines[:3]) + lines[3][:10])
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
