"""Rewriting: the prompt, answer extraction, the candidate grid, sharding, and the resumable shard job."""

import json

import pandas as pd
import pytest

import _tiny
from hspd.errors import ConfigError, DataError, ModelError
from hspd.io import ResumableJsonl, iter_jsonl
from hspd.rewrite import (ASSISTANT_PREFIX, RECORD_FIELDS, SYSTEM_PROMPT, USER_TEMPLATE, build_prompt,
                          candidate_plan, extract_answer, rewrite_shard, select_shard)


@pytest.fixture(scope="module")
def tok():
    return _tiny.tokenizer()


@pytest.fixture(scope="module")
def models():
    return _tiny.qwen2(0), _tiny.qwen2(1)


@pytest.fixture(scope="module")
def scripted(tok):
    """Models that answer every rewriting prompt with "kalo mi</answer>"."""
    prompt = tok(build_prompt(tok, "anything"), add_special_tokens=False)["input_ids"]
    script = _tiny.script_after_prompt(tok, prompt, "kalo mi</answer>")
    return _tiny.scripted(_tiny.qwen2(0), script), _tiny.scripted(_tiny.qwen2(1), script)


TEXTS = pd.DataFrame({"id": ["t0", "t1", "t2", "t3", "t4"],
                      "text": ["kalo mi nu", "pe ra si to ve zu", "an", "er in or ul th sh", "ch qu ex"]})
SMALL = dict(temperatures=[0.7, 1.3], samples_per_temperature=2, max_new_tokens=6, seed=11, k_min=10)


def read(path):
    return list(iter_jsonl(path))


def by_key(records):
    return {(r["id"], r["candidate"]): r for r in records}


def assert_same_records(got, want):
    """Same candidates; α / k means to float rounding (batches of other sizes sum in other orders)."""
    got, want = by_key(got), by_key(want)
    assert set(got) == set(want)
    for key, rec in got.items():
        exact = {f: v for f, v in rec.items() if f not in ("mean_alpha", "mean_k")}
        assert exact == {f: v for f, v in want[key].items() if f not in ("mean_alpha", "mean_k")}
        for f in ("mean_alpha", "mean_k"):
            assert rec[f] == pytest.approx(want[key][f], rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Prompt, answers, candidates, shards


def test_build_prompt_uses_the_chat_template_and_the_assistant_prefix(tok):
    prompt = build_prompt(tok, "you are a {bad} kalo")
    user = USER_TEMPLATE.replace("{text}", "you are a {bad} kalo")
    assert prompt == (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                      f"<|im_start|>assistant\n{ASSISTANT_PREFIX}")
    assert prompt.endswith("Here is the transcription result: <answer>")


def test_build_prompt_without_chat_template_is_a_model_error(tok):
    import copy

    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(ModelError, match="chat template"):
        build_prompt(bare, "x")


@pytest.mark.parametrize("generated,stopped,want", [
    ("a good fact.</answer>", True, ("a good fact.", True)),
    ("\n  a good fact. \t</answer>\n", True, ("a good fact.", True)),
    ("first</answer> second</answer>", True, ("first", True)),  # the first closing tag ends the answer
    ("   </answer>", True, ("", False)),  # empty
    ("</answer>", True, ("", False)),
    ("no closing tag", True, ("no closing tag", False)),  # EOS before closing: invalid
    ("cut at the limit", False, ("cut at the limit", False)),
    ("closed</answer>", False, ("closed", False)),  # hit the token limit: never valid
    ("", True, ("", False)),
    ("</answ", True, ("</answ", False)),  # a partial tag is no tag
])
def test_extract_answer(generated, stopped, want):
    assert extract_answer(generated, stopped) == want


def test_candidate_plan_defaults_and_order():
    paper = candidate_plan("paper")
    assert len(paper) == 18 and [i for i, _ in paper] == list(range(18))
    assert [t for _, t in paper[:4]] == [0.6, 0.6, 0.6, 0.8] and paper[-1] == (17, 1.5)
    code = candidate_plan("code")
    assert len(code) == 10 and sorted({t for _, t in code}) == [0.6, 0.8, 1.0, 1.2, 1.5]
    assert candidate_plan("paper", [1.0, 0.5], 2) == [(0, 1.0), (1, 1.0), (2, 0.5), (3, 0.5)]


@pytest.mark.parametrize("args,match", [
    (("beam",), "unknown variant"),
    (("paper", []), "temperature list is empty"),
    (("paper", [0.6, 0.0]), r"must be > 0, got \[0.0\]"),
    (("paper", [0.6], 0), "samples_per_temperature"),
])
def test_candidate_plan_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        candidate_plan(*args)


def test_select_shard_is_balanced_ordered_and_complete():
    df = pd.DataFrame({"id": range(11), "text": list("abcdefghijk")})
    shards = [select_shard(df, i, 4) for i in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 2]
    assert pd.concat(shards)["id"].tolist() == list(range(11))
    assert select_shard(df, 2, 4)["id"].tolist() == [6, 7, 8]  # depends only on (shard, n_shards)
    assert select_shard(df, 0, 1)["id"].tolist() == list(range(11))
    assert [len(select_shard(df.head(2), i, 4)) for i in range(4)] == [1, 1, 0, 0]
    for bad in [(4, 4), (-1, 4), (0, 0)]:
        with pytest.raises(ConfigError):
            select_shard(df, *bad)


# ----------------------------------------------------------------------------------------------------------------
# The shard job


def test_rewrite_shard_records_with_valid_answers(tmp_path, tok, scripted):
    base, toxic = scripted
    texts = pd.DataFrame({"id": [3, 1], "text": ["this is bad</answer> really", "zu zu"]})
    out = rewrite_shard(texts, base_model=base, toxic_model=toxic, tokenizer=tok, method="socd-emd", variant="paper",
                        output_path=tmp_path / "shard0.jsonl", batch_texts=2, progress=False,
                        **{**SMALL, "max_new_tokens": 20})
    records = read(out)
    assert len(records) == 2 * 4 and not (tmp_path / "shard0.jsonl.partial").exists()
    for r in records:
        assert tuple(r) == RECORD_FIELDS
        # The input's own "</answer>" is part of the prompt and does not stop generation.
        assert (r["text"], r["valid"], r["finish"]) == ("kalo mi", True, "stop")
        assert r["n_tokens"] == len(tok("kalo mi</answer>", add_special_tokens=False)["input_ids"])
        assert 0 < r["mean_alpha"] < 1 and r["mean_k"] >= 10
    assert [(r["id"], r["candidate"], r["temperature"]) for r in records[:4]] == [
        (3, 0, 0.7), (3, 1, 0.7), (3, 2, 1.3), (3, 3, 1.3)]


def test_prompt_and_cd_write_null_alpha(tmp_path, tok, scripted):
    base, toxic = scripted
    for method, tox in [("prompt", None), ("cd", toxic)]:
        out = rewrite_shard(TEXTS.head(1), base_model=base, toxic_model=tox, tokenizer=tok, method=method,
                            output_path=tmp_path / f"{method}.jsonl", progress=False, **SMALL)
        lines = (tmp_path / f"{method}.jsonl").read_text().splitlines()
        assert all(json.loads(line)["mean_alpha"] is None and '"mean_k": null' in line for line in lines)
        assert len(read(out)) == 4


def test_candidates_do_not_depend_on_batch_or_shard(tmp_path, tok, models):
    base, toxic = models
    kwargs = dict(base_model=base, toxic_model=toxic, tokenizer=tok, method="socd-js", progress=False, **SMALL)
    whole = read(rewrite_shard(TEXTS, output_path=tmp_path / "all.jsonl", batch_texts=3, **kwargs))
    shard = select_shard(TEXTS, 1, 2)  # t3, t4
    part = read(rewrite_shard(shard, output_path=tmp_path / "s1.jsonl", batch_texts=1, **kwargs))
    alone = read(rewrite_shard(TEXTS.iloc[[4]], output_path=tmp_path / "t4.jsonl", batch_texts=1, **kwargs))
    assert len(whole) == 20
    assert_same_records(part, [r for r in whole if r["id"] in ("t3", "t4")])
    assert_same_records(alone, [r for r in whole if r["id"] == "t4"])
    # Candidates of one text differ from each other (their own random streams).
    assert len({r["text"] for r in whole if r["id"] == "t0"}) == 4


def test_interrupted_shard_resumes_to_the_same_output(tmp_path, tok, models, monkeypatch):
    base, toxic = models
    kwargs = dict(base_model=base, toxic_model=toxic, tokenizer=tok, method="socd-tvd", batch_texts=2,
                  progress=False, **SMALL)
    full = read(rewrite_shard(TEXTS, output_path=tmp_path / "full.jsonl", **kwargs))

    out = tmp_path / "killed.jsonl"
    real_write = ResumableJsonl.write_unit
    written = []

    def write_then_die(self, records, unit=None):
        if len(written) == 3:
            raise KeyboardInterrupt("killed by the cluster")
        real_write(self, records, unit)
        written.append(1)

    monkeypatch.setattr(ResumableJsonl, "write_unit", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        rewrite_shard(TEXTS, output_path=out, **kwargs)
    monkeypatch.setattr(ResumableJsonl, "write_unit", real_write)
    assert not out.exists() and len(read(out.with_name(out.name + ".partial"))) == 3 * 4

    from hspd.decoding import DualModelDecoder

    real_generate, prompts_seen = DualModelDecoder.generate, []

    def counting_generate(self, prompts, rows, progress=None):
        prompts_seen.extend(prompts)
        return real_generate(self, prompts, rows, progress)

    monkeypatch.setattr(DualModelDecoder, "generate", counting_generate)
    resumed = read(rewrite_shard(TEXTS, output_path=out, **kwargs))
    assert len(prompts_seen) == 2  # only t3 and t4 were decoded again
    assert_same_records(resumed, full)


def test_code_variant_uses_its_defaults(tmp_path, tok, models):
    base, toxic = models
    base.generation_config.top_k, base.generation_config.top_p = 20, 0.8
    base.generation_config.repetition_penalty = 1.05
    try:
        records = read(rewrite_shard(TEXTS.head(1), base_model=base, toxic_model=toxic, tokenizer=tok,
                                     method="socd-emd", variant="code", max_new_tokens=3,
                                     output_path=tmp_path / "code.jsonl", progress=False))
    finally:
        base.generation_config.top_k = base.generation_config.top_p = None
        base.generation_config.repetition_penalty = None
    assert [r["temperature"] for r in records] == [0.6, 0.6, 0.8, 0.8, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5]


@pytest.mark.parametrize("texts,match", [
    (pd.DataFrame({"id": [1]}), r"missing column\(s\) \['text'\]"),
    (pd.DataFrame({"id": [1, 1], "text": ["a", "b"]}), "duplicate id 1"),
    (pd.DataFrame({"id": [1, 2], "text": ["a", "  "]}), r"row 1 \(id 2\) has an empty or missing text"),
    (pd.DataFrame({"id": [1, 2], "text": ["a", None]}), r"row 1 \(id 2\)"),
])
def test_bad_texts_fail_before_any_model_runs(tmp_path, tok, texts, match):
    with pytest.raises(DataError, match=match):
        rewrite_shard(texts, base_model=None, toxic_model=None, tokenizer=tok, method="socd-emd",
                      output_path=tmp_path / "x.jsonl", progress=False)


def test_bad_settings_and_models_fail_before_decoding(tmp_path, tok, models):
    base, toxic = models
    kwargs = dict(base_model=base, tokenizer=tok, output_path=tmp_path / "x.jsonl", progress=False)
    with pytest.raises(ConfigError, match="unknown rewriting method 'socd-l1'"):
        rewrite_shard(TEXTS, toxic_model=toxic, method="socd-l1", **kwargs)
    with pytest.raises(ModelError, match="needs a toxic model"):
        rewrite_shard(TEXTS, toxic_model=None, method="cd", **kwargs)
    with pytest.raises(ModelError, match="tokenizers differ"):
        rewrite_shard(TEXTS, toxic_model=toxic, method="socd-emd", toxic_tokenizer=_tiny.tokenizer(vocab=1500),
                      **kwargs)
    with pytest.raises(ConfigError, match="batch_texts"):
        rewrite_shard(TEXTS, toxic_model=toxic, method="cd", batch_texts=0, **kwargs)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_text_too_long_for_the_context_is_not_decoded_and_the_batch_survives(tmp_path, tok, models):
    """A 12,000-token text with a small-context model: marked too_long (invalid, ranking drops it) before any
    decoding; the other texts of its batch get exactly the candidates they get without it."""
    from hspd.models import context_length

    base, toxic = models
    kwargs = dict(base_model=base, toxic_model=toxic, tokenizer=tok, method="socd-tvd", batch_texts=3,
                  progress=False, **SMALL)
    long_text = " ".join(["word"] * 12000)
    assert len(tok(long_text)["input_ids"]) > context_length(base)
    texts = pd.concat([TEXTS.iloc[:2], pd.DataFrame({"id": ["long"], "text": [long_text]}), TEXTS.iloc[2:]],
                      ignore_index=True)
    got = read(rewrite_shard(texts, output_path=tmp_path / "with.jsonl", **kwargs))
    ref = read(rewrite_shard(TEXTS, output_path=tmp_path / "without.jsonl", **kwargs))
    long_rows = [r for r in got if r["id"] == "long"]
    assert len(long_rows) == 4 and all(r["finish"] == "too_long" and not r["valid"] for r in long_rows)
    assert [r for r in got if r["id"] != "long"] == ref
