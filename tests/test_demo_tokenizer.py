"""The demo tokenizer: offline reload, Qwen2-style special tokens and chat template, round trips."""

import copy
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
    for t in (pair["toxic"], pair["clean"], pair["answer"], mmlu["question"], *mmlu["choices"], dghs["text"].dropna().iloc[0],
              pd.read_csv(corpus["toxigen_test"])["text"].iloc[0],
              json.loads(open(corpus["pretrain"]).readline())["text"],
              json.loads(open(corpus["classifier_train"]).readline())["text"]):
        assert t in texts
    demo = [t for t in texts if T.REWRITE_SYSTEM in t]
    assert len(demo) == SMALL["n_rewrite_pairs"]  # one filled prompt per pair
    assert any(f"{T.REWRITE_ASSISTANT}{pair['answer']}</answer>" in t for t in demo)
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


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_trainers_reject_empty_texts_and_a_file_as_folder(kind, tmp_path):
    train = T.demo_tokenizer_trainer(kind)
    with pytest.raises(DataError, match="no non-empty training texts"):
        train(["", "  "], tmp_path / "t")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        train(["some text"], tmp_path / "file")


def test_bad_inputs(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"demo\.tokenizer_vocab = 100: a byte-level BPE needs at least"):
        T.train_demo_tokenizer(["some text"], tmp_path / "t", vocab_size=100)
    with pytest.raises(DataError, match="no corpus files"):
        T.demo_tokenizer_texts({})
    pd.DataFrame({"id": [1], "label": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"demo corpus file 'bad' .*bad\.csv: no text column"):
        T.demo_tokenizer_texts({"bad": tmp_path / "bad.csv"})
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        T.demo_tokenizer_texts({"missing": tmp_path / "missing.jsonl"})


# --- The SentencePiece-style tokenizer (LLaMA-2's layout) --------------------------------------------------

# LLaMA-2's tokenizer.json (meta-llama/Llama-2-7b-hf), the parts that define how it encodes and decodes.
LLAMA2_NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "\u2581"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
LLAMA2_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
LLAMA2_POST_PROCESSOR = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}

ODD_TEXTS = [
    "café, naïve — 東京 🙂 and\ttabs  double  spaces\n",  # characters the corpus does not have: byte fallback
    " leading space and trailing space ",
    "  two leading spaces",
    "line one\nline two\n\n",
    "x</answer>y<answer>z",
    "Ωμέγα",
]


@pytest.fixture(scope="module")
def sp_dir(texts, tmp_path_factory):
    return T.train_demo_sp_tokenizer(texts, tmp_path_factory.mktemp("sp") / "tokenizer", vocab_size=1024)


@pytest.fixture(scope="module")
def sp(sp_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(sp_dir))


def test_sp_tokenizer_json_mirrors_llama2(sp_dir):
    cfg = json.loads((sp_dir / "tokenizer.json").read_text())
    assert cfg["normalizer"] == LLAMA2_NORMALIZER
    assert cfg["pre_tokenizer"] is None
    assert cfg["post_processor"] == LLAMA2_POST_PROCESSOR
    assert cfg["decoder"] == LLAMA2_DECODER
    model = cfg["model"]
    assert (model["type"], model["byte_fallback"], model["fuse_unk"]) == ("BPE", True, True)
    assert model["unk_token"] == "<unk>"
    expected_head = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    assert [t for t, i in sorted(model["vocab"].items(), key=lambda x: x[1])][:259] == expected_head
    # Only the three specials are added tokens; the byte tokens are model vocabulary, as in LLaMA-2.
    assert [(a["id"], a["content"], a["special"]) for a in cfg["added_tokens"]] == [
        (0, "<unk>", True), (1, "<s>", True), (2, "</s>", True)]


def test_sp_reload_and_special_tokens(sp):
    assert len(sp) <= 1024
    assert [sp.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>", "<0x00>", "<0xFF>")] == [0, 1, 2, 3, 258]
    assert (sp.unk_token, sp.bos_token, sp.eos_token, sp.pad_token) == ("<unk>", "<s>", "</s>", "</s>")
    assert sp("hi")["input_ids"][0] == sp.bos_token_id == 1  # LLaMA-2 puts BOS in front of every text
    assert sp("hi")["input_ids"][1:] == sp("hi", add_special_tokens=False)["input_ids"]
    assert sp("")["input_ids"] == [1]
    assert sp.eos_token_id not in sp("hi")["input_ids"]  # and no EOS at the end
    assert sp.convert_tokens_to_ids("<0x41>") not in sp.all_special_ids  # byte tokens survive skip_special_tokens


def test_sp_encodes_with_word_starts_as_llama2(sp):
    word = T.REWRITE_SYSTEM.split()[1]  # a word of the training texts: one piece
    assert sp.tokenize(word) == ["\u2581" + word]
    assert sp.tokenize(" " + word) == ["\u2581", "\u2581" + word]  # the text's space is a token of its own
    assert sp.tokenize(f"{word} {word}") == ["\u2581" + word] * 2
    assert sp.tokenize("a  b") == ["\u2581a", "\u2581", "\u2581b"]
    # Decoding strips the one space the normalizer put in front: a text's first word decodes without it.
    assert sp.decode(sp(" " + word, add_special_tokens=False)["input_ids"][1:]) == word


def test_sp_pieces_never_cross_a_word_start(sp, texts):
    """Trained with a split before each "▁", saved without one: the same ids, because no piece has an inner "▁"."""
    from tokenizers import pre_tokenizers

    assert not [t for t in sp.get_vocab() if "\u2581" in t[1:]]
    split = copy.deepcopy(sp.backend_tokenizer)
    split.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    sample = texts[::7] + ODD_TEXTS
    assert [e.ids for e in split.encode_batch(sample)] == sp(sample)["input_ids"]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_sp_round_trip(sp, text):
    ids = sp(text)["input_ids"]
    assert sp.decode(ids, skip_special_tokens=True) == text
    assert sp.unk_token_id not in ids  # byte fallback: nothing is unknown


def test_sp_round_trip_of_the_corpus_and_byte_fallback(sp, texts):
    ids = sp(texts)["input_ids"]
    assert sp.batch_decode(ids, skip_special_tokens=True) == texts
    assert all(x[0] == sp.bos_token_id and sp.unk_token_id not in x for x in ids)
    assert sp.tokenize("🙂") == ["\u2581", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]  # U+1F642 in UTF-8


def test_sp_small_vocabulary_falls_back_to_bytes(texts, tmp_path):
    # The smallest vocabulary: specials, bytes and "▁"; every other character is bytes, still lossless.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(T.train_demo_sp_tokenizer(texts, tmp_path / "t",
                                                                      vocab_size=T.MIN_SP_VOCAB)))
    assert len(tok) == T.MIN_SP_VOCAB == 260
    assert tok.tokenize("hi you") == ["\u2581", "<0x68>", "<0x69>", "\u2581", "<0x79>", "<0x6F>", "<0x75>"]
    for text in [texts[0], *ODD_TEXTS]:
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    mid = T.build_demo_sp_tokenizer(texts, vocab_size=300)  # a capped alphabet, a few merges
    assert len(mid) == 300
    assert mid.decode(mid(texts[0])["input_ids"], skip_special_tokens=True) == texts[0]


def test_sp_training_is_deterministic(texts, tmp_path):
    a = T.train_demo_sp_tokenizer(texts, tmp_path / "a", vocab_size=600)
    b = T.train_demo_sp_tokenizer(texts, tmp_path / "b", vocab_size=600)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "tokenizer_config.json").read_bytes() == (b / "tokenizer_config.json").read_bytes()


def test_sp_bad_inputs_and_kinds(tmp_path):
    with pytest.raises(ConfigError, match=r"demo\.tokenizer_vocab = 259: a SentencePiece-style BPE needs at least 260"):
        T.train_demo_sp_tokenizer(["some text"], tmp_path / "t", vocab_size=259)
    assert T.demo_tokenizer_trainer("bpe") is T.train_demo_tokenizer
    assert T.demo_tokenizer_trainer("sentencepiece") is T.train_demo_sp_tokenizer
    with pytest.raises(ConfigError, match=r"kind 'wordpiece': expected one of \['bpe', 'sentencepiece'\]"):
        T.demo_tokenizer_trainer("wordpiece")
