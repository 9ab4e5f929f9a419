"""DGHS, ToxiGen and MMLU readers and splits (SPEC §2), on small fixtures in the real schemas."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from hspd.data import (
    TOXIGEN_CATEGORIES,
    load_dataset_source,
    read_dghs,
    read_mmlu,
    read_toxigen,
    select_dghs,
    split_dghs,
    split_toxigen,
    toxigen_category,
)
from hspd.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"
ID_TARGETS = ("wom trans gendermin bis gay gay.man gay.wom mixed.race ethnic.minority indig indig.wom non.white bla "
              "bla.wom bla.man asi asi.wom asi.east asi.south asi.chin asi.pak arab eastern.europe russian pol "
              "hispanic immig asylum ref for jew mus mus.wom other.religion").split()
ALL_SPLITS = ["train", "dev", "test"]


@pytest.fixture(scope="module")
def dghs_parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("dghs") / "dghs.parquet"
    read_dghs(FIXTURES / "dghs.csv").to_parquet(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------------------
# DGHS
# ---------------------------------------------------------------------------------------------------------


def test_the_id_list_has_the_34_codes_of_the_spec():
    assert len(ID_TARGETS) == len(set(ID_TARGETS)) == 34


@pytest.mark.parametrize("name", ["dghs.csv", "dghs.jsonl", "parquet"])
def test_read_dghs_every_format_gives_the_same_table(name, dghs_parquet):
    df = read_dghs(dghs_parquet if name == "parquet" else FIXTURES / name)
    assert len(df) == 16
    assert "Unnamed: 0" in df.columns and "acl.id.matched" in df.columns  # extra columns are tolerated
    assert df["target"].tolist()[:2] == ["wom", "bla, wom"]
    assert df["text"].iloc[13] == "NA"  # a word, not a missing value
    assert df["text"].iloc[15] == "fixture hate sentence\nover two lines about arabs"


def test_read_dghs_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(DataError, match=r"dghs_missing_target\.csv: missing column\(s\) \['target'\]"):
        read_dghs(FIXTURES / "dghs_missing_target.csv")
    with pytest.raises(DataError, match=r"dghs_empty\.csv: the file is empty"):
        read_dghs(FIXTURES / "dghs_empty.csv")
    header_only = tmp_path / "header.csv"
    header_only.write_text((FIXTURES / "dghs.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=r"header\.csv: the table has no rows"):
        read_dghs(header_only)
    with pytest.raises(DataError, match="file not found"):
        read_dghs(tmp_path / "nope.csv")


def test_select_dghs_matches_targets_exactly():
    df = read_dghs(FIXTURES / "dghs.csv")
    sel = select_dghs(df, ID_TARGETS, ["train"])
    # acl2 "bla, wom" is compound, acl3 is nothate, acl6/acl7 have codes outside the list; empties stay here.
    assert sel["acl.id"].tolist() == ["acl1", "acl8", "acl9", "acl10", "acl14", "acl16"]
    assert select_dghs(df, ["wom"], ALL_SPLITS, label="nothate")["acl.id"].tolist() == ["acl3"]
    assert select_dghs(df, ["bla, wom"], ALL_SPLITS)["acl.id"].tolist() == ["acl2"]  # only if asked verbatim


@pytest.mark.parametrize("kwargs, message", [
    ({"splits": ["train", "validation", "tst"]}, r"unknown split\(s\) \['tst', 'validation'\]"),
    ({"splits": []}, "`splits` is empty"),
    ({"splits": "train"}, "lists of strings"),
    ({"targets": []}, "`targets` is empty"),
    ({"targets": "wom"}, "lists of strings"),
    ({"label": "toxic"}, "unknown label 'toxic'"),
])
def test_select_dghs_rejects_bad_selections(kwargs, message):
    df = read_dghs(FIXTURES / "dghs.csv")
    args = {"targets": ID_TARGETS, "splits": ["train"], "label": "hate", **kwargs}
    with pytest.raises(DataError, match=message):
        select_dghs(df, **args)


@pytest.mark.parametrize("splits, steps, ids", [
    (["train"], [16, 14, 9, 6, 4], ["acl1", "acl8", "acl14", "acl16"]),
    (ALL_SPLITS, [16, 14, 14, 10, 8], ["acl1", "acl4", "acl5", "acl8", "acl11", "acl14", "acl15", "acl16"]),
])
def test_split_dghs_counts_every_step_and_gives_stable_ids(splits, steps, ids):
    df = read_dghs(FIXTURES / "dghs.csv")
    corpus, log = split_dghs(df, targets=ID_TARGETS, splits=splits, label="hate", source_name="fixture")
    assert [s["step"] for s in log] == ["read", "label", "split", "target", "non-empty"]
    assert [s["rows"] for s in log] == steps
    assert list(corpus.columns) == ["id", "text", "target", "split", "label"]
    assert corpus["id"].tolist() == [f"dghs-{i}" for i in ids]
    assert (corpus["label"] == "hate").all()
    assert corpus.set_index("id").loc["dghs-acl14", "text"] == "NA"


def test_split_dghs_is_the_same_from_every_format(dghs_parquet):
    def run(path):
        return split_dghs(read_dghs(path), targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="x")

    csv, jsonl, parquet = run(FIXTURES / "dghs.csv"), run(FIXTURES / "dghs.jsonl"), run(dghs_parquet)
    pd.testing.assert_frame_equal(csv[0], jsonl[0])
    pd.testing.assert_frame_equal(csv[0], parquet[0])
    assert csv[1] == jsonl[1] == parquet[1]


def test_split_dghs_errors_on_duplicate_or_missing_ids_and_missing_columns():
    df = read_dghs(FIXTURES / "dghs.csv")
    dup = df.copy()
    dup.loc[7, "acl.id"] = "acl1"  # acl8's row now claims acl1's id
    with pytest.raises(DataError, match=r"fixture: duplicate 'acl.id' in rows 0 \(acl1\), 7 \(acl1\)"):
        split_dghs(dup, targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="fixture")
    # A duplicate among rows that the selection drops does not matter.
    dup_out = df.copy()
    dup_out.loc[2, "acl.id"] = "acl1"  # acl3 is nothate
    split_dghs(dup_out, targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="fixture")
    missing = df.copy()
    missing.loc[3, "acl.id"] = None
    with pytest.raises(DataError, match=r"fixture: column 'acl.id' is empty in row\(s\) 3"):
        split_dghs(missing, targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="fixture")
    with pytest.raises(DataError, match=r"DGHS hub-copy: missing column\(s\) \['split'\]"):
        split_dghs(df.drop(columns=["split"]), targets=ID_TARGETS, splits=ALL_SPLITS, label="hate",
                   source_name="hub-copy")
    with pytest.raises(DataError, match="DGHS hub-copy: the table has no rows"):
        split_dghs(df.iloc[:0], targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="hub-copy")


# ---------------------------------------------------------------------------------------------------------
# ToxiGen
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group, category", [
    ("women", "gender_lgbtq"), ("lgbtq+ folks", "gender_lgbtq"), ("LGBTQ", "gender_lgbtq"),
    ("black folks / african-americans", "race_nationalities"), ("  Native American/Indigenous Folks ", "race_nationalities"),
    ("middle_east", "race_nationalities"), ("muslim folks", "religion"), ("jewish", "religion"),
    ("mental_dis", "disability"), ("folks with physical disabilities", "disability"),
    ("immigrants", None), ("", None), (None, None), (float("nan"), None), ("black folks", None),
])
def test_toxigen_category(group, category):
    assert toxigen_category(group) == category


def test_toxigen_categories_are_the_spec_lists():
    assert {c: len(g) for c, g in TOXIGEN_CATEGORIES.items()} == {
        "gender_lgbtq": 3, "race_nationalities": 16, "religion": 4, "disability": 4}


def test_read_toxigen_and_its_errors(tmp_path):
    df = read_toxigen(FIXTURES / "toxigen_train.csv")
    assert len(df) == 41 and "toxicity_human" in df.columns
    pd.DataFrame({"text": ["a"], "group": ["women"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"t\.csv: missing column\(s\) \['target_group'\]"):
        read_toxigen(tmp_path / "t.csv")
    # Only text and target_group are required.
    pd.DataFrame({"text": ["a"], "target_group": ["women"]}).to_json(tmp_path / "m.jsonl", orient="records", lines=True)
    assert read_toxigen(tmp_path / "m.jsonl")["target_group"].tolist() == ["women"]


def _toxigen(val_fraction=0.1, seed=0):
    return split_toxigen(read_toxigen(FIXTURES / "toxigen_train.csv"), read_toxigen(FIXTURES / "toxigen_test.csv"),
                         val_fraction=val_fraction, seed=seed)


def test_split_toxigen_tags_and_counts_every_excluded_row():
    test, val, report = _toxigen()
    assert list(test.columns) == ["id", "text", "target_group", "category", "distribution"]
    # Row 3 has a blank text and row 9 an unknown group: ids keep the source positions of the others.
    assert test["id"].tolist() == [f"toxigen-test-{i}" for i in (0, 1, 2, 4, 5, 6, 7, 8)]
    assert test["category"].tolist() == ["gender_lgbtq", "gender_lgbtq", "race_nationalities", "race_nationalities",
                                         "religion", "religion", "disability", "disability"]
    assert test["distribution"].tolist() == ["ID"] * 6 + ["OOD"] * 2
    assert report["test"] == {
        "rows": 10, "kept": 8, "excluded_unknown_group": {"immigrants": 1}, "excluded_empty_text": 1,
        "per_category": {"gender_lgbtq": 2, "race_nationalities": 2, "religion": 2, "disability": 2}}
    assert report["train"]["excluded_unknown_group"] == {"<missing>": 1, "immigrants": 2}
    assert report["train"]["excluded_empty_text"] == 1
    assert report["train"]["per_category"] == {"gender_lgbtq": 9, "race_nationalities": 14, "religion": 8,
                                               "disability": 6}
    assert report["train"]["rows"] == 41 and report["train"]["kept"] == 37
    json.dumps(report)  # the rule writes it as JSON


@pytest.mark.parametrize("fraction, per_category", [
    (0.1, {"gender_lgbtq": 1, "race_nationalities": 1, "religion": 1, "disability": 1}),
    (0.25, {"gender_lgbtq": 2, "race_nationalities": 4, "religion": 2, "disability": 2}),  # round half up
])
def test_split_toxigen_validation_is_stratified_and_seeded(fraction, per_category):
    test, val, report = _toxigen(fraction, seed=3)
    assert report["val"]["per_category"] == per_category
    assert val["category"].value_counts().to_dict() == {k: v for k, v in per_category.items() if v}
    assert val["id"].str.startswith("toxigen-train-").all()
    positions = val["id"].str.rsplit("-", n=1).str[1].astype(int)
    assert positions.is_monotonic_increasing and positions.is_unique
    assert not set(positions) & {7, 38, 39, 40}  # never an empty text or an unknown group
    again = _toxigen(fraction, seed=3)[1]
    pd.testing.assert_frame_equal(val, again)
    others = {tuple(_toxigen(fraction, seed=s)[1]["id"]) for s in range(6)}
    assert len(others) > 1  # the seed decides


def test_split_toxigen_row_ids_are_positions_in_the_source():
    train = read_toxigen(FIXTURES / "toxigen_train.csv")
    test, val, _ = _toxigen(0.5, seed=1)
    for row in val.itertuples():
        pos = int(row.id.rsplit("-", 1)[1])
        assert train["text"].iloc[pos] == row.text


def test_split_toxigen_errors():
    train = read_toxigen(FIXTURES / "toxigen_train.csv")
    with pytest.raises(DataError, match=r"ToxiGen test: missing column\(s\) \['target_group'\]"):
        split_toxigen(train, train.drop(columns=["target_group"]), seed=0)
    with pytest.raises(DataError, match="val_fraction must be in"):
        split_toxigen(train, train, val_fraction=1.0, seed=0)


# ---------------------------------------------------------------------------------------------------------
# MMLU-format questions
# ---------------------------------------------------------------------------------------------------------


def test_read_mmlu():
    df = read_mmlu(FIXTURES / "mmlu.jsonl")
    assert df["answer"].tolist() == [1, 2, 0, 3]
    assert df["choices"].iloc[1] == ["oxygen", "nitrogen", "carbon dioxide", "helium"]


def test_read_mmlu_from_parquet(tmp_path):
    read_mmlu(FIXTURES / "mmlu.jsonl").to_parquet(tmp_path / "m.parquet")
    assert read_mmlu(tmp_path / "m.parquet")["choices"].iloc[0] == ["4", "5", "6", "7"]


@pytest.mark.parametrize("bad, message", [
    ({"answer": 4}, r"row 2: column 'answer' must be an int in 0-3"),
    ({"answer": "B"}, r"row 2: column 'answer'"),
    ({"answer": None}, r"row 2: column 'answer'"),
    ({"choices": ["a", "b", "c"]}, r"row 2: column 'choices' must be a list of 4 strings"),
    ({"choices": "a b c d"}, r"row 2: column 'choices'"),
    ({"question": "  "}, r"row 2: column 'question' must be a non-empty string"),
    ({"subject": None}, r"row 2: column 'subject'"),
])
def test_read_mmlu_errors_name_the_row_and_column(tmp_path, bad, message):
    rows = [json.loads(line) for line in (FIXTURES / "mmlu.jsonl").read_text().splitlines()]
    rows[2].update(bad)
    path = tmp_path / "mmlu_bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"mmlu_bad\.jsonl: " + message):
        read_mmlu(path)


def test_read_mmlu_missing_column(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 0}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl: missing column\(s\) \['subject'\]"):
        read_mmlu(path)


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


def test_load_dataset_source_local_path_and_precedence():
    df = load_dataset_source({"path": str(FIXTURES / "dghs.jsonl")}, what="DGHS")
    assert len(df) == 16
    # `path` next to `hub` wins: the paper config points at a local copy by adding it.
    both = {"hub": "LennardZuendorf/Dynamically-Generated-Hate-Speech-Dataset", "revision": "main",
            "split": "train", "path": str(FIXTURES / "dghs.csv")}
    assert len(load_dataset_source(both, what="DGHS")) == 16


@pytest.mark.parametrize("spec, message", [
    ({"hub": "toxigen/toxigen-data", "config": "annotated", "split": "test"}, "needs a pinned `revision`"),
    ({"hub": "toxigen/toxigen-data", "revision": "main"}, "ToxiGen test: hub dataset 'toxigen/toxigen-data' needs a `split`"),
    ({"package": "json"}, "needs 'path' or 'hub'"),
    ({"name": "x"}, "a source must be a mapping"),
    ({"path": "/nonexistent/toxigen.csv"}, r"ToxiGen test file .*toxigen\.csv: file not found"),
])
def test_load_dataset_source_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_dataset_source(spec, what="ToxiGen test")


def test_load_dataset_source_header_only_file(tmp_path):
    (tmp_path / "t.csv").write_text("text,target_group\n")
    with pytest.raises(DataError, match=r"ToxiGen test .*t\.csv: the table has no rows"):
        load_dataset_source({"path": str(tmp_path / "t.csv")}, what="ToxiGen test")


def test_hub_source_offline_fails_fast_naming_the_dataset(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    spec = {"hub": "LennardZuendorf/Dynamically-Generated-Hate-Speech-Dataset", "revision": "main", "split": "train"}
    start = time.monotonic()
    with pytest.raises(DataError, match=r"DGHS: cannot load hub dataset "
                                        r"'LennardZuendorf/Dynamically-Generated-Hate-Speech-Dataset'.*offline mode"):
        load_dataset_source(spec, what="DGHS")
    assert time.monotonic() - start < 5


# --- empty successes: a stage whose output would be empty fails, naming what emptied it ------------------------

def test_split_dghs_that_would_be_empty_names_the_filter_and_the_values():
    df = read_dghs(FIXTURES / "dghs.csv")
    shouting = df.assign(label=df["label"].str.upper())
    with pytest.raises(DataError, match=r"no row is left after the `label` filter \(wanted one of hate\).*'HATE'"):
        split_dghs(shouting, targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="fixture")
    # A Parquet `target` column of lists matches no code: the message shows the lists.
    listed = df.assign(target=[[t] for t in df["target"]])
    with pytest.raises(DataError, match=r"after the `target` filter \(wanted one of wom, trans.* and 26 more\).*\['wom'\]"):
        split_dghs(listed, targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="fixture")


def test_non_string_texts_are_refused_with_their_rows():
    df = read_dghs(FIXTURES / "dghs.csv")
    bad = df.astype({"text": object})
    bad.loc[2, "text"] = 12345
    bad.at[5, "text"] = {"a": 1}
    with pytest.raises(DataError, match=r"fixture: column 'text' holds non-string values \(dict, int\) in row\(s\) 2, 5"):
        split_dghs(bad, targets=ID_TARGETS, splits=ALL_SPLITS, label="hate", source_name="fixture")
    train = read_toxigen(FIXTURES / "toxigen_train.csv").astype({"text": object})
    train.loc[0, "text"] = 7
    with pytest.raises(DataError, match=r"ToxiGen test: column 'text' holds non-string values \(int\) in row\(s\) 0"):
        split_toxigen(train, train, seed=0)


def test_split_toxigen_with_no_known_group_fails():
    train = read_toxigen(FIXTURES / "toxigen_train.csv")
    unknown = train.assign(target_group="immigrants")
    with pytest.raises(DataError, match=r"ToxiGen test: none of its 41 rows is usable: 41 have a target_group outside"):
        split_toxigen(train, unknown, seed=0)
