"""Tables between rules, resumable files, and source specs."""

import json

import pandas as pd
import pytest

from hspd.errors import DataError, ModelError
from hspd.io import ResumableJsonl, file_sha256, iter_jsonl, read_table, write_json, write_table
from hspd.models import Source, check_same_tokenizer, provenance, source


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_table_round_trip(tmp_path, suffix):
    df = pd.DataFrame({"id": ["a", "b"], "text": ["héllo, \"world\"", "x\ny"], "n": [1, 2]})
    path = write_table(df, tmp_path / f"t{suffix}")
    back = read_table(path, ["id", "text"])
    assert back["text"].tolist() == df["text"].tolist()
    assert back["n"].tolist() == [1, 2]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_read_table_errors_name_the_file_and_column(tmp_path):
    p = tmp_path / "c.csv"
    pd.DataFrame({"id": [1]}).to_csv(p, index=False)
    with pytest.raises(DataError, match=r"corpus .*c\.csv: missing column\(s\) \['text'\]"):
        read_table(p, ["id", "text"], what="corpus")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DataError, match="e.jsonl: the file is empty"):
        read_table(tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "none.csv")
    with pytest.raises(DataError, match="unsupported table format '.xlsx'"):
        read_table(tmp_path / "t.xlsx")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{not json\n')
    with pytest.raises(DataError, match="bad.jsonl: cannot be read"):
        read_table(tmp_path / "bad.jsonl")


def test_csv_keeps_na_like_strings(tmp_path):
    # "NA" and "null" are words in a corpus, not missing values.
    p = tmp_path / "t.csv"
    p.write_text("id,text\n1,NA\n2,null\n")
    assert read_table(p)["text"].tolist() == ["NA", "null"]


def test_resumable_jsonl_skips_done_units_and_drops_torn_tail(tmp_path):
    out = tmp_path / "shard0.jsonl"
    with ResumableJsonl(out) as f:
        f.write_unit([{"id": "a", "k": 0}, {"id": "a", "k": 1}])
        f.write_unit([{"id": "b", "k": 0}])
    with open(f.partial, "a") as fh:  # a writer killed mid-line
        fh.write('{"id": "c", "k"')
    assert not out.exists()
    g = ResumableJsonl(out).open()
    assert g.done == {"a", "b"}
    g.write_unit([{"id": "c", "k": 0}])
    g.finalize()
    assert [r["id"] for r in iter_jsonl(out)] == ["a", "a", "b", "c"]
    assert not g.partial.exists()


def test_iter_jsonl_reports_bad_line_number(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\nnope\n{"a": 2}\n')
    with pytest.raises(DataError, match="line 2"):
        list(iter_jsonl(p))


def test_write_json_plain_types(tmp_path):
    import numpy as np

    write_json({"a": np.float32(0.5), "b": np.arange(2), "c": float("nan")}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 0.5, "b": [0, 1], "c": None}


def test_file_sha256_of_file_and_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("x")
    h1 = file_sha256(tmp_path / "d")
    (tmp_path / "d" / "a").write_text("y")
    assert file_sha256(tmp_path / "d") != h1
    assert len(file_sha256(tmp_path / "d" / "a")) == 64


def test_source_precedence_and_errors(tmp_path):
    s = source({"hub": "Qwen/Qwen2.5-3B-Instruct", "revision": "abc", "path": str(tmp_path)}, "qwen")
    assert s.kind == "path" and s.ref == str(tmp_path) and s.extra["hub"] == "Qwen/Qwen2.5-3B-Instruct"
    s = source({"hub": "Qwen/Qwen2.5-3B-Instruct", "revision": "abc"}, "qwen")
    assert s == Source("qwen", "hub", "Qwen/Qwen2.5-3B-Instruct", "abc", {}) and s.pretrained_kwargs() == {"revision": "abc"}
    with pytest.raises(ModelError, match="qwen: hub source .* needs a pinned `revision`"):
        source({"hub": "Qwen/Qwen2.5-3B-Instruct"}, "qwen")
    with pytest.raises(ModelError, match="emb: Python package 'no_such_pkg_xyz' is not installed"):
        source({"package": "no_such_pkg_xyz"}, "emb")
    with pytest.raises(ModelError, match="m: a source must be"):
        source({"weights": "x"}, "m")


def test_missing_local_model_names_it(tmp_path):
    from hspd.models import load_tokenizer

    with pytest.raises(ModelError, match=r"toxic: local path .*nothere does not exist"):
        load_tokenizer({"path": str(tmp_path / "nothere")}, "toxic")


def test_provenance_of_local_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "train.log").write_text("noise")
    rec = provenance({"path": str(tmp_path)}, "m")
    (tmp_path / "train.log").write_text("other noise")  # logs do not define the model
    assert provenance({"path": str(tmp_path)}, "m")["sha256"] == rec["sha256"]
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert provenance({"path": str(tmp_path)}, "m")["sha256"] != rec["sha256"]


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def __len__(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab)


def test_check_same_tokenizer():
    check_same_tokenizer(_Tok({"a": 0, "b": 1}), _Tok({"a": 0, "b": 1}), "base", "toxic")
    with pytest.raises(ModelError, match="base has 2 tokens, toxic has 3"):
        check_same_tokenizer(_Tok({"a": 0, "b": 1}), _Tok({"a": 0, "b": 1, "c": 2}), "base", "toxic")
    with pytest.raises(ModelError, match="share one tokenizer"):
        check_same_tokenizer(_Tok({"a": 0, "b": 1}), _Tok({"a": 1, "b": 0}), "base", "toxic")
