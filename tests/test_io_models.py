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


def _run(out, units, settings=None, stop_after=None):
    """Write units (lists of records) through ResumableJsonl, skipping those done; stop after `stop_after`."""
    f = ResumableJsonl(out, settings=settings).open()
    n = 0
    for unit in units:
        if unit[0]["id"] in f.done:
            continue
        if stop_after is not None and n == stop_after:
            f.close()
            return None
        f.write_unit(unit)
        n += 1
    return f.finalize()


UNITS = [[{"id": f"t{i}", "candidate": c, "text": f"rewrite {i}.{c} é"} for c in range(3)] for i in range(4)]


def test_resume_after_a_kill_at_any_byte_equals_an_uninterrupted_run(tmp_path):
    """Cut the partial file and its index at every byte (the machine died mid-write): the resumed file is the
    uninterrupted one byte for byte, and a unit cut inside its records is redone whole, never counted as done."""
    ref = _run(tmp_path / "ref.jsonl", UNITS, settings={"k": 1}).read_bytes()
    _run(tmp_path / "p.jsonl", UNITS, settings={"k": 1}, stop_after=3)
    partial = (tmp_path / "p.jsonl.partial").read_bytes()
    index = (tmp_path / "p.jsonl.partial.units").read_bytes()
    header = index.index(b"\n") + 1
    cuts = [(d, len(index)) for d in range(len(partial) + 1)] + [(len(partial), i) for i in range(header, len(index))]
    for data_cut, index_cut in cuts:
        out = tmp_path / "cut.jsonl"
        (tmp_path / "cut.jsonl.partial").write_bytes(partial[:data_cut])
        (tmp_path / "cut.jsonl.partial.units").write_bytes(index[:index_cut])
        f = ResumableJsonl(out, settings={"k": 1}).open()
        whole_units = partial[:data_cut].count(b"\n") // 3  # three records per unit, each a whole line
        committed = index[header:index_cut].count(b"\n")
        assert len(f.done) == min(whole_units, committed), (data_cut, index_cut, f.done)
        f.close()
        assert _run(out, UNITS, settings={"k": 1}).read_bytes() == ref, (data_cut, index_cut)
        assert not (tmp_path / "cut.jsonl.partial.units").exists()
        out.unlink()


def test_a_partial_made_with_other_settings_is_discarded_or_refused(tmp_path, caplog):
    from hspd.io import StalePartialError

    out = tmp_path / "s.jsonl"
    _run(out, UNITS, settings={"max_new_tokens": 256}, stop_after=2)
    assert not ResumableJsonl(out, settings={"max_new_tokens": 256}).is_stale()
    assert ResumableJsonl(out, settings={"max_new_tokens": 128}).is_stale()
    with pytest.raises(StalePartialError, match="s.jsonl.partial was made with other settings"):
        ResumableJsonl(out, settings={"max_new_tokens": 128}, stale="error").open()
    assert len((tmp_path / "s.jsonl.partial").read_text().splitlines()) == 6  # refused: kept as it was
    with caplog.at_level("WARNING", logger="hspd"):
        f = ResumableJsonl(out, settings={"max_new_tokens": 128}).open()
    assert f.done == set() and "made with other settings: discarded" in caplog.text
    f.close()
    # A partial of the old format (no index) cannot prove its settings: redone too.
    (tmp_path / "old.jsonl.partial").write_text('{"id": "t0", "candidate": 0}\n')
    assert ResumableJsonl(tmp_path / "old.jsonl").open().done == set()


def test_restore_moves_a_finished_file_back_to_a_resumable_one(tmp_path):
    out = _run(tmp_path / "r.jsonl", UNITS, settings={"k": 2})
    ref = out.read_bytes()
    ResumableJsonl(out, settings={"k": 2}).restore()
    assert not out.exists()
    f = ResumableJsonl(out, settings={"k": 2}).open()
    assert f.done == {f"t{i}" for i in range(4)}
    assert f.finalize().read_bytes() == ref
    with pytest.raises(DataError, match="must share one 'id'"):
        ResumableJsonl(tmp_path / "x.jsonl").open().write_unit([{"id": "a"}, {"id": "b"}])


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    """Atomic writers go through mkstemp (mode 0600); results must stay readable by the group on a cluster."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        paths = [write_json({"a": 1}, tmp_path / "a.json"),
                 write_table(pd.DataFrame({"id": [1]}), tmp_path / "t.csv")]
    finally:
        os.umask(old)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in paths)


def test_check_same_tokenizer_compares_merges_and_special_ids():
    """Same vocabulary (size and map) but other merges, or another EOS id: still another tokenizer."""
    import json as _json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    import _tiny

    base = _tiny.tokenizer()
    spec = _json.loads(base.backend_tokenizer.to_str())
    assert spec["model"]["type"] == "BPE" and len(spec["model"]["merges"]) > 2
    spec["model"]["merges"] = spec["model"]["merges"][::-1]  # the same merges, other priorities

    def rebuild(s, **special):
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_json.dumps(s)),
                                       **{"eos_token": base.eos_token, "bos_token": base.bos_token, **special})

    other_merges = rebuild(spec)
    assert len(other_merges) == len(base) and other_merges.get_vocab() == base.get_vocab()
    check_same_tokenizer(base, rebuild(_json.loads(base.backend_tokenizer.to_str())), "base", "toxic")
    with pytest.raises(ModelError, match="the same vocabulary but other merges"):
        check_same_tokenizer(base, other_merges, "base", "toxic")
    other_eos = rebuild(_json.loads(base.backend_tokenizer.to_str()), eos_token=base.convert_ids_to_tokens(5))
    with pytest.raises(ModelError, match="special token ids differ"):
        check_same_tokenizer(base, other_eos, "base", "toxic")
