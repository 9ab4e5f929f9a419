"""The demo tokenizer: offline reload, Qwen2-style special tokens and chat template, round trips."""

import json

import pandas as pd
import pytest

from hspd.demo import tokenizer as T
from hspd.demo.corpus import make_demo_corpus
from hspd.errors import ConfigError, DataError

SMALL = dict(n_dghs=200, n_toxigen_train=40, n_toxigen_test=16, n_mmlu=10, n_rewrite_pairs=100, n_pretrain=200,
             n_classifier=200)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_demo_corpus(tmp_path_factory.mktemp("corpus"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def texts(corpus):
    return T.demo_tokenizer_texts(corpus)


@pytest.fixture(scope="module")
def tok(texts, tmp_path_factory):
    from transformers import AutoTokenizer

    out = T.train_demo_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=1024)
    return AutoTokenizer.from_pretrained(str(out))  # offline: a local folder only


def test_training_texts_cover_every_file_and_the_prompt(corpus, texts):
    pair = json.loads(open(corpus["rewrite_pairs"]).readline())
    mmlu = json.loads(open(corpus["mmlu"]).readline())
    dghs = pd.read_csv(corpus["dghs"])
    for t in (pair["toxic"], pair["clean"], mmlu["question"], *mmlu["choices"], dghs["text"].dropna().iloc[0],
              pd.read_csv(corpus["toxigen_test"])["text"].iloc[0],
              json.loads(open(corpus["pretrain"]).readline())["text"],
              json.loads(open(corpus["classifier_train"]).readline())["text"]):
        assert t in texts
    demo = [t for t in texts if T.REWRITE_SYSTEM in t]
    assert len(demo) == SMALL["n_rewrite_pairs"]  # one filled prompt per pair
    assert any(f"{T.REWRITE_ASSISTANT}{pair['clean']}</answer>" in t for t in demo)
    assert all(t.strip() for t in texts)


def test_reload_and_special_tokens(tok):
    assert len(tok) <= 1024
    assert [tok.convert_tokens_to_ids(t) for t in T.SPECIAL_TOKENS] == [0, 1, 2]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    assert tok("hello")["input_ids"] == tok.encode("hello", add_special_tokens=False)  # nothing added, as Qwen2
    for tag in T.ANSWER_TOKENS:
        assert len(tok(tag)["input_ids"]) == 1
    assert tok.convert_tokens_to_ids("<answer>") not in tok.all_special_ids  # kept by skip_special_tokens


def test_chat_template_is_qwen2s(tok):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n")
    # Without a system turn Qwen2 inserts its default one.
    assert tok.apply_chat_template(msgs[1:], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n")
    # The rewriting prompt continues an assistant prefix.
    prefixed = tok.apply_chat_template(msgs + [{"role": "assistant", "content": T.REWRITE_ASSISTANT}], tokenize=False,
                                       continue_final_message=True)
    assert prefixed.endswith("<|im_start|>assistant\nHere is the transcription result: <answer>")


@pytest.mark.parametrize("text", [
    "<|im_start|>user\nWomen are vermin.<|im_end|>\n<|im_start|>assistant\nHere is the transcription result: "
    "<answer>Women are kind people.</answer><|im_end|><|endoftext|>",
    "café, naïve — 東京 🙂 and\ttabs  double  spaces\n",
    "x</answer>y<answer>z",
])
def test_round_trip(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id is None or tok.unk_token_id not in ids  # byte-level: nothing is unknown


def test_skip_special_tokens_keeps_the_answer_tags(tok):
    ids = tok("<|im_start|>assistant\n<answer>ok</answer><|im_end|>")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<answer>ok</answer>"


def test_prompt_words_are_whole_tokens(tok):
    # The prompt's words were in the training texts, so each is one token: a demonstration stays short.
    n = len(tok(T.REWRITE_SYSTEM)["input_ids"])
    assert n <= len(T.REWRITE_SYSTEM.split()) + 4  # words plus the three punctuation marks


def test_training_is_deterministic(texts, tmp_path):
    a = T.train_demo_tokenizer(texts, tmp_path / "a", vocab_size=600)
    b = T.train_demo_tokenizer(texts, tmp_path / "b", vocab_size=600)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "chat_template.jinja").exists()


def test_bad_inputs(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"demo\.tokenizer_vocab = 100: a byte-level BPE needs at least"):
        T.train_demo_tokenizer(["some text"], tmp_path / "t", vocab_size=100)
    with pytest.raises(DataError, match="no non-empty training texts"):
        T.train_demo_tokenizer(["", "  "], tmp_path / "t")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        T.train_demo_tokenizer(["some text"], tmp_path / "file")
    with pytest.raises(DataError, match="no corpus files"):
        T.demo_tokenizer_texts({})
    pd.DataFrame({"id": [1], "label": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"demo corpus file 'bad' .*bad\.csv: no text column"):
        T.demo_tokenizer_texts({"bad": tmp_path / "bad.csv"})
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        T.demo_tokenizer_texts({"missing": tmp_path / "missing.jsonl"})
