"""The demo toxicity classifier: a Detoxify-format checkpoint that loads through Detoxify offline and tells
the synthetic toxic texts from their rewrites."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from hspd.demo import classifier as K
from hspd.demo.corpus import LABELS, make_demo_corpus
from hspd.errors import ConfigError, DataError
from hspd.io import read_table


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    corpus = make_demo_corpus(tmp_path_factory.mktemp("corpus"), seed=0)
    ckpt = K.train_demo_classifier(corpus["classifier_train"], tmp_path_factory.mktemp("clf"), seed=0)
    return corpus, ckpt


@pytest.fixture(scope="module")
def unseen(tmp_path_factory, trained):
    """Texts of another seed's corpus that the classifier never saw: DGHS ID hate rows and rewrite pairs."""
    corpus, _ = trained
    seen = set(read_table(corpus["classifier_train"])["text"])
    other = make_demo_corpus(tmp_path_factory.mktemp("other"), seed=1)
    dghs = read_table(other["dghs"])
    hate = dghs.loc[(dghs["label"] == "hate") & dghs["text"].fillna("").str.strip().ne(""), "text"]
    pairs = read_table(other["rewrite_pairs"])
    return {"hate": [t for t in hate if t not in seen], "toxic": [t for t in pairs["toxic"] if t not in seen],
            "clean": [t for t in pairs["clean"] if t not in seen]}


def scores(ckpt, texts):
    from detoxify import Detoxify

    return Detoxify(checkpoint=str(ckpt), device="cpu").predict(texts)


@pytest.mark.slow
def test_checkpoint_is_detoxify_format(trained):
    import torch

    _, ckpt = trained
    assert ckpt.name == "detoxify_demo.ckpt"
    loaded = torch.load(ckpt, map_location="cpu", weights_only=False)
    args = loaded["config"]["arch"]["args"]
    assert set(args) == {"model_type", "model_name", "tokenizer_name", "num_classes"}
    assert (args["model_name"], args["tokenizer_name"], args["num_classes"]) == (
        "BertForSequenceClassification", "BertTokenizerFast", 6)
    assert args["model_type"].startswith("/") and (ckpt.parent / "bert" / "config.json").exists()
    assert (ckpt.parent / "bert").resolve() == Path(args["model_type"])
    assert loaded["config"]["dataset"]["args"]["classes"] == list(LABELS)
    assert all(re.match(r"(bert|classifier)\.", k) for k in loaded["state_dict"])
    n_params = sum(v.numel() for k, v in loaded["state_dict"].items() if "position_ids" not in k)
    assert 0.5e6 <= n_params <= 2e6


@pytest.mark.slow
def test_separates_unseen_toxic_texts_from_their_rewrites(trained, unseen):
    _, ckpt = trained
    assert min(len(v) for v in unseen.values()) > 100
    s = scores(ckpt, unseen["hate"] + unseen["toxic"] + unseen["clean"])["toxicity"]
    n_hate, n_toxic = len(unseen["hate"]), len(unseen["toxic"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(s[:n_hate]) > 0.8  # the DGHS rows the workflow rewrites
    assert mean(s[n_hate:n_hate + n_toxic]) > 0.8
    assert mean(s[n_hate + n_toxic:]) < 0.2  # their rewrites


@pytest.mark.slow
def test_scores_short_fragments_like_continuations(trained):
    _, ckpt = trained
    out = scores(ckpt, ["they are filthy vermin and", "should be thrown out of", "I went to the park on Monday",
                        "muslims are kind people and"])
    assert out["toxicity"][0] > 0.5 and out["toxicity"][1] > 0.5
    assert out["toxicity"][2] < 0.5 and out["toxicity"][3] < 0.5
    assert out["threat"][1] > out["threat"][2]
    single = scores(ckpt, ["you are worthless idiots"])  # Detoxify gives floats for a one-text list
    assert isinstance(single["toxicity"], float) and single["toxicity"] > 0.5


@pytest.mark.slow
def test_heldout_metrics_file(trained):
    corpus, ckpt = trained
    m = json.loads((ckpt.parent / "metrics.json").read_text())
    assert m["n_train"] + m["n_heldout"] == len(read_table(corpus["classifier_train"]))
    assert m["mean_toxicity_toxic"] > 0.8 and m["mean_toxicity_clean"] < 0.2
    assert set(m["classes"]) == {"toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"}
    assert m["classes"]["toxicity"]["accuracy"] > 0.95
    # Graded: mild texts score between clean and explicit ones.
    assert m["mean_toxicity_clean"] < m["mean_toxicity_mild"] < m["mean_toxicity_toxic"]


def test_training_is_reproducible(tmp_path, one_thread):
    import torch

    corpus = make_demo_corpus(tmp_path / "corpus", seed=0, n_dghs=200, n_toxigen_train=40, n_toxigen_test=16,
                              n_mmlu=10, n_rewrite_pairs=20, n_pretrain=10, n_classifier=200)
    kw = dict(seed=0, epochs=1, hidden_size=32, num_heads=2, num_layers=1, vocab_size=300)
    a = torch.load(K.train_demo_classifier(corpus["classifier_train"], tmp_path / "a", **kw), weights_only=False)
    b = torch.load(K.train_demo_classifier(corpus["classifier_train"], tmp_path / "b", **kw), weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert (tmp_path / "a/bert/tokenizer.json").read_bytes() == (tmp_path / "b/bert/tokenizer.json").read_bytes()


def test_wordpiece_vocabulary(tmp_path):
    tok = K.train_wordpiece(["Women are VERMIN.", "women are kind", "Kind people"], tmp_path, vocab_size=200,
                            max_length=32)
    assert tok.convert_ids_to_tokens(tok("women are vermins!")["input_ids"]) == [
        "[CLS]", "women", "are", "vermin", "##s", "!", "[SEP]"]  # uncased, whole words, ## continuation
    assert tok.model_max_length == 32
    assert tok.unk_token_id not in tok("zebra #42 ~ok")["input_ids"]  # any ASCII word splits into characters


def test_split_heldout():
    train, held = K.split_heldout(100, 0.15, seed=0)
    assert len(held) == 15 and sorted(train + held) == list(range(100))
    assert K.split_heldout(100, 0.15, seed=0) == (train, held) and K.split_heldout(100, 0.15, seed=1) != (train, held)


def _write(tmp_path, rows, name="c.jsonl"):
    path = tmp_path / name
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


GOOD = {"text": "women are vermin", **{c: 1.0 for c in LABELS}}


@pytest.mark.parametrize("row, match", [
    ({**GOOD, "threat": 2.0}, r"column 'threat', row 1: label 2\.0 is not a number between 0 and 1"),
    ({**GOOD, "insult": None}, r"column 'insult', row 1: label"),
    ({**GOOD, "toxic": "yes"}, r"column 'toxic', row 1: label 'yes'"),
    ({**GOOD, "text": "  "}, r"column 'text', row 1: empty text"),
])
def test_bad_labels_name_file_column_and_row(tmp_path, row, match):
    path = _write(tmp_path, [GOOD, row])
    with pytest.raises(DataError, match=rf"classifier training file .*c\.jsonl: {match}"):
        K.train_demo_classifier(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # raised before any work


def test_missing_label_column(tmp_path):
    path = _write(tmp_path, [{k: v for k, v in GOOD.items() if k != "identity_hate"}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['identity_hate'\]"):
        K.train_demo_classifier(path, tmp_path / "out")


def test_heldout_needs_both_classes(tmp_path):
    path = _write(tmp_path, [GOOD] * 40)
    with pytest.raises(DataError, match="held-out rows need toxic and non-toxic texts"):
        K.train_demo_classifier(path, tmp_path / "out")


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"heldout_fraction": 1.0}, {"num_heads": 5}])
def test_bad_hyperparameters(tmp_path, kwargs):
    path = _write(tmp_path, [GOOD])
    with pytest.raises(ConfigError, match="demo classifier: need epochs >= 1"):
        K.train_demo_classifier(path, tmp_path / "out", **kwargs)
