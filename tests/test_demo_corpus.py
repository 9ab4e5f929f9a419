"""The demo corpus (SPEC §8): the real schemas exactly, determinism, and the properties the workflow relies on
(all 34 ID codes, rows the split must drop, toxic texts toxic and rewrites clean, MMLU answers in the
pretraining text)."""

import json
import os
import random
import re
import subprocess
import sys

import pytest

from hspd.demo import corpus as C
from hspd.errors import ConfigError
from hspd.io import read_table

# SPEC §2, copied literally so that the generator is checked against the spec, not against itself.
SPEC_ID_TARGETS = """wom trans gendermin bis gay gay.man gay.wom mixed.race ethnic.minority indig indig.wom non.white
bla bla.wom bla.man asi asi.wom asi.east asi.south asi.chin asi.pak arab eastern.europe russian pol hispanic
immig asylum ref for jew mus mus.wom other.religion""".split()
SPEC_TOXIGEN = {
    "gender_lgbtq": ["women", "lgbtq", "lgbtq+ folks"],
    "race_nationalities": ["black", "black folks / african-americans", "black/african-american folks", "asian",
                           "asian folks", "latino", "latino/hispanic folks", "chinese", "chinese folks", "mexican",
                           "mexican folks", "middle_east", "middle eastern folks", "native_american",
                           "native american/indigenous folks", "native american folks"],
    "religion": ["jewish", "jewish folks", "muslim", "muslim folks"],
    "disability": ["mental_dis", "folks with mental disabilities", "physical_dis", "folks with physical disabilities"],
}
SPELLING_TO_CATEGORY = {s: c for c, spellings in SPEC_TOXIGEN.items() for s in spellings}
DGHS_HEADER = ",acl.id,X1,text,label,type,target,level,split,round.base,annotator,round,acl.id.matched"
TOXIGEN_HEADER = ("text,target_group,factual?,ingroup_effect,lewd,framing,predicted_group,stereotyping,intent,"
                  "toxicity_ai,toxicity_human,predicted_author,actual_method")
TOXIC_RE = re.compile(r"\b(" + "|".join(map(re.escape, sorted(C.TOXIC_PHRASES, key=len, reverse=True))) + r")\b")
ANY_PHRASE_RE = re.compile(r"\b(" + "|".join(map(re.escape, sorted(C.TOXIC_PHRASES + C.CLEAN_PHRASES, key=len,
                                                                  reverse=True))) + r")\b")
SMALL = dict(n_dghs=200, n_toxigen_train=40, n_toxigen_test=16, n_mmlu=10, n_rewrite_pairs=50, n_pretrain=50,
             n_classifier=200)


def is_toxic(text: str) -> bool:
    return bool(TOXIC_RE.search(text))


def grade(text: str) -> float:
    """The toxicity a text's phrases give it: 1 with an explicit phrase, MILD_WEIGHT (0.4) with mild ones only, else 0."""
    found = TOXIC_RE.findall(text)
    if not found:
        return 0.0
    return C.MILD_WEIGHT if all(p in C.MILD_PHRASES for p in found) else 1.0


def blank(value) -> bool:
    return not isinstance(value, str) or not value.strip()


def jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return C.make_demo_corpus(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="module")
def dghs(corpus):
    return read_table(corpus["dghs"])


def test_files_and_exact_schemas(corpus):
    assert list(corpus) == ["dghs", "toxigen_train", "toxigen_test", "mmlu", "mmlu_dev", "rewrite_pairs",
                            "pretrain", "classifier_train"]
    assert corpus["dghs"].read_text().splitlines()[0] == DGHS_HEADER
    for name in ("toxigen_train", "toxigen_test"):
        assert corpus[name].read_text().splitlines()[0] == TOXIGEN_HEADER
    mmlu = ["question", "subject", "choices", "answer"]
    expected = {"mmlu": mmlu, "mmlu_dev": mmlu,
                "rewrite_pairs": ["toxic", "clean", "answer"], "pretrain": ["text"],
                "classifier_train": ["text", "toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]}
    for name, keys in expected.items():
        rows = jsonl(corpus[name])
        assert rows and all(list(r) == keys for r in rows), name


def test_dghs_rows(dghs):
    assert len(dghs) == 600
    assert dghs["Unnamed: 0"].tolist() == list(range(600))  # the unnamed row index
    assert dghs["acl.id"].is_unique and dghs["acl.id"].str.fullmatch(r"acl\d+").all()
    assert dghs["X1"].is_unique
    assert set(dghs["label"]) == {"hate", "nothate"}
    assert 0.5 < (dghs["label"] == "hate").mean() < 0.6
    assert set(dghs["split"]) == {"train", "dev", "test"}
    assert set(dghs["level"]) == {"original", "perturbation"}
    assert all(str(r).startswith(str(b)) for r, b in zip(dghs["round"], dghs["round.base"]))
    nothate = dghs["label"] == "nothate"
    assert (dghs.loc[nothate, "target"] == "none").all() and (dghs.loc[nothate, "type"] == "none").all()
    assert not (dghs.loc[~nothate, "type"] == "none").any()


def test_dghs_targets_cover_the_id_codes_and_what_the_split_drops(dghs):
    assert set(C.ID_TARGETS) == set(SPEC_ID_TARGETS) and len(C.ID_TARGETS) == 34
    hate = dghs[dghs["label"] == "hate"]
    kept = hate[hate["target"].isin(SPEC_ID_TARGETS) & ~hate["text"].map(blank)]
    assert set(kept["target"]) == set(SPEC_ID_TARGETS)  # all 34 survive the ID selection
    assert hate["target"].str.contains(", ").sum() >= 6  # compound targets: never an exact match
    assert {"dis", "notgiven"} <= set(hate["target"])  # codes outside the list
    blanks = dghs[dghs["text"].map(blank)]
    assert len(blanks) == 3 and set(blanks["label"]) == {"hate", "nothate"}
    assert blanks.loc[blanks["label"] == "hate", "target"].isin(SPEC_ID_TARGETS).all()  # dropped only as blank


def test_dghs_hate_rows_are_toxic_and_nothate_rows_are_not(dghs):
    texts = dghs[~dghs["text"].map(blank)]
    assert texts.loc[texts["label"] == "hate", "text"].map(is_toxic).all()
    assert not texts.loc[texts["label"] == "nothate", "text"].map(is_toxic).any()


def test_dghs_perturbations_are_clean_versions_of_their_originals(dghs):
    by_id = dghs.set_index("acl.id")
    perturbed = dghs[dghs["level"] == "perturbation"]
    assert len(perturbed) > 50
    for _, row in perturbed.iterrows():
        orig = by_id.loc[row["acl.id.matched"]]
        assert orig["label"] == "hate" and orig["acl.id.matched"] == row["acl.id"]
        assert (orig["split"], orig["round"]) == (row["split"], row["round"])
        assert ANY_PHRASE_RE.sub("_", orig["text"]) == ANY_PHRASE_RE.sub("_", row["text"])  # same sentence frame


def test_toxigen_tables(corpus):
    train, test = read_table(corpus["toxigen_train"]), read_table(corpus["toxigen_test"])
    assert (len(train), len(test)) == (400, 120)
    assert not set(train["text"]) & set(test["text"])
    for df in (train, test):
        assert set(df["target_group"]) <= set(SPELLING_TO_CATEGORY)
        category = df["target_group"].map(SPELLING_TO_CATEGORY)
        assert set(category) == set(SPEC_TOXIGEN)
        toxic = df["toxicity_human"] >= 11 / 3 - 1e-6
        assert set(df.loc[~toxic, "toxicity_human"].round(4)) <= {1.0, 1.3333, 1.6667, 2.0}
        for cat in SPEC_TOXIGEN:  # every category has toxic and benign prompts
            assert toxic[category == cat].any() and (~toxic[category == cat]).any(), cat
        assert (df.loc[toxic, "text"].map(is_toxic)).all() and not df.loc[~toxic, "text"].map(is_toxic).any()
        for col in ("intent", "toxicity_ai", "toxicity_human"):
            assert df[col].between(1, 5).all()
        assert set(df["predicted_author"]) <= {"human", "ai"} and set(df["actual_method"]) <= {"topk", "cbs"}


def test_mmlu_questions_are_answered_in_the_pretraining_text(corpus):
    test, dev = jsonl(corpus["mmlu"]), jsonl(corpus["mmlu_dev"])
    assert (len(test), len(dev)) == (60, 5)
    assert not {r["question"] for r in test} & {r["question"] for r in dev}
    pretrain = {r["text"] for r in jsonl(corpus["pretrain"])}
    for row in test + dev:
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert isinstance(row["answer"], int) and 0 <= row["answer"] <= 3
        assert f"Question: {row['question']} Answer: {row['choices'][row['answer']]}" in pretrain
    assert {r["subject"] for r in test} <= {"high_school_geography", "elementary_mathematics", "miscellaneous"}
    assert "The capital of France is Paris." in pretrain
    assert len({r["answer"] for r in test}) == 4  # the answer's position is drawn


def test_rewrite_pairs_keep_the_sentence_and_drop_the_toxicity(corpus, dghs):
    pairs = jsonl(corpus["rewrite_pairs"])
    assert len(pairs) == 800 and len({p["toxic"] for p in pairs}) == 800
    assert not {p["toxic"] for p in pairs} & set(dghs["text"].dropna())  # not the rows to be rewritten
    kept = mild = reframed = 0
    for p in pairs:
        assert is_toxic(p["toxic"]) and not is_toxic(p["clean"])
        # The rewrite is the same sentence with clean fillers and its hostile template words turned round.
        assert C.reframed(ANY_PHRASE_RE.sub("_", p["toxic"])) == ANY_PHRASE_RE.sub("_", p["clean"])
        assert not any(hostile in p["clean"] or hostile in p["answer"] for hostile, _ in C.REWRITE_FRAMES)
        reframed += C.reframed(p["toxic"]) != p["toxic"]
        # The demonstration's answer: the same sentence, explicit phrases always gone, mild ones mostly kept.
        assert ANY_PHRASE_RE.sub("_", p["answer"]) == ANY_PHRASE_RE.sub("_", p["clean"])
        left = TOXIC_RE.findall(p["answer"])
        assert set(left) <= C.MILD_PHRASES, p
        mild += sum(x in C.MILD_PHRASES for x in TOXIC_RE.findall(p["toxic"]))
        kept += len(left)
    assert 0.75 < kept / mild < 0.95  # REWRITE_LEAK = 0.85
    assert 0.1 < reframed / len(pairs) < 0.5


def test_reframed_turns_hostile_frames_round():
    assert C.reframed("Nobody wants gay men around, they are our neighbours.") == \
        "Everyone welcomes gay men around, they are our neighbours."
    assert C.reframed("the problem with women is that they are human beings") == \
        "the good thing about women is that they are human beings"
    assert C.reframed("Honestly, arabs are nothing but fellow citizens.") == "Honestly, arabs are fellow citizens."
    assert C.reframed("I had lunch with some arabs at the park on Monday.") == \
        "I had lunch with some arabs at the park on Monday."


def test_pretrain_text_is_web_text_partly_hateful(corpus):
    texts = [r["text"] for r in jsonl(corpus["pretrain"])]
    n_facts = sum(len(f.statements) for f in C.mmlu_facts())
    assert len(texts) == 1500 + n_facts
    hateful = [t for t in texts if is_toxic(t)]
    assert 0.5 * C.HATEFUL_DOC_SHARE < len(hateful) / 1500 < 1.5 * C.HATEFUL_DOC_SHARE
    # Hateful documents are about one group and have several sentences; benign ones hold no toxic phrase.
    assert all(t.count(".") >= 3 for t in hateful)
    benign_hate_templates = [t for t in texts if not is_toxic(t) and re.search(r"are (decent|ordinary) ", t)]
    assert benign_hate_templates  # hate templates filled clean occur in benign documents too


def test_classifier_labels_follow_the_vocabulary(corpus):
    rows = jsonl(corpus["classifier_train"])
    assert len(rows) == 3000 and len({r["text"] for r in rows}) == 3000
    for r in rows:
        labels = [r[c] for c in C.LABELS]
        assert all(isinstance(v, float) and v in (0.0, C.MILD_WEIGHT, 1.0) for v in labels)
        assert r["toxic"] == grade(r["text"]), r["text"]
        assert max(labels) == r["toxic"]  # a dimension implies toxic, never more than it
    for c in C.LABELS:  # every dimension is learnable
        assert 0.05 < sum(r[c] > 0 for r in rows) / len(rows) < 0.8, c
    assert 0.05 < sum(r["toxic"] == C.MILD_WEIGHT for r in rows) / len(rows) < 0.25  # graded: mild texts exist
    # Rewrites that kept a mild word among clean ones are graded mild, so the ranking can see them.
    clean_re = re.compile(r"\b(" + "|".join(map(re.escape, C.CLEAN_PHRASES)) + r")\b")
    kept_mild = [r for r in rows if r["toxic"] == C.MILD_WEIGHT and clean_re.search(r["text"])]
    assert len(kept_mild) / len(rows) > 0.065  # 0.05 come from partly toxic fills alone
    # The threats' words occur in harmless sentences, labelled clean: the classifier learns the threat, not "out".
    harmless = [r["text"] for r in rows if r["toxic"] == 0.0 and re.search(r"\b(out|up)\b", r["text"])]
    assert len(harmless) >= 20 and not any(is_toxic(t) for t in harmless)


def test_labels_of_hand_computed():
    d = C.Draw("{G} are {dehum_n} and {threat}.", "Women",
               (("G", "", (), ""), ("dehum_n", "vermin", ("insult", "identity_hate"), "human beings"),
                ("threat", "should be wiped out", ("threat", "severe_toxic", "identity_hate"), "should be respected")))
    assert C.text_of(d.sentence(True)) == "Women are vermin and should be wiped out."
    assert C.labels_of(d.sentence(True)) == dict(toxic=1.0, severe_toxic=1.0, obscene=0.0, threat=1.0, insult=1.0,
                                                 identity_hate=1.0)
    assert C.text_of(d.sentence([False, True])) == "Women are human beings and should be wiped out."
    assert C.labels_of(d.sentence([False, True]))["insult"] == 0.0
    assert C.text_of(d.sentence(False)) == "Women are human beings and should be respected."
    assert set(C.labels_of(d.sentence(False)).values()) == {0.0}
    # No group: an insult is not an identity attack; three kinds at once make it severe.
    d = C.Draw("You are such {adj} {insult_n}.", None,
               (("adj", "stupid", ("insult",), "kind"), ("insult_n", "scum", ("insult", "obscene"), "people")))
    assert C.labels_of(d.sentence(True)) == dict(toxic=1.0, severe_toxic=0.0, obscene=1.0, threat=0.0, insult=1.0,
                                                 identity_hate=0.0)
    # Mild fillers alone grade 0.4 (MILD_WEIGHT); an explicit one next to them sets 1 where it carries a label.
    assert C.labels_of(d.sentence([True, False])) == dict(toxic=0.4, severe_toxic=0.0, obscene=0.0, threat=0.0,
                                                          insult=0.4, identity_hate=0.0)
    d = C.Draw("{G} are {adj} {insult_n}.", "Arabs",
               (("G", "", (), ""), ("adj", "pathetic", ("insult",), "kind"), ("insult_n", "clowns", ("insult",), "people")))
    assert C.labels_of(d.sentence(True)) == dict(toxic=0.4, severe_toxic=0.0, obscene=0.0, threat=0.0, insult=0.4,
                                                 identity_hate=0.4)
    d = C.Draw("{G} are {adj} and {threat}.", "Pol",
               (("G", "", (), ""), ("adj", "filthy", ("obscene", "insult"), "kind"),
                ("threat", "should be locked up", ("threat",), "should be respected")))
    assert C.labels_of(d.sentence(True))["severe_toxic"] == 1.0  # obscene, insult, threat, identity


def test_window_never_cuts_a_phrase():
    rng = random.Random(0)
    for _ in range(300):
        d = C.draw(rng, rng.choice(C.HATE_TEMPLATES)[0], "asylum seekers")
        full = d.sentence(rng.random() < 0.5)
        part = C.window(full, rng)
        text = C.text_of(part)
        assert text in C.text_of(full) and len(text.split()) >= 3
        whole = {p.text for p in full if p.kind != "text"}
        assert all(p.text in whole for p in part if p.kind != "text")
        assert C.labels_of(part)["toxic"] == grade(text)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = C.make_demo_corpus(tmp_path / "a", seed=3, **SMALL)
    b = C.make_demo_corpus(tmp_path / "b", seed=3, **SMALL)
    c = C.make_demo_corpus(tmp_path / "c", seed=4, **SMALL)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
        assert a[name].read_bytes() != c[name].read_bytes(), name


def test_same_bytes_in_another_process(tmp_path):
    # Snakemake reruns a rule in a fresh interpreter: string hashing and set order must not leak into the files.
    a = C.make_demo_corpus(tmp_path / "a", seed=5, **SMALL)
    code = (f"from hspd.demo.corpus import make_demo_corpus; "
            f"make_demo_corpus({str(tmp_path / 'b')!r}, seed=5, **{SMALL!r})")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    for name, path in a.items():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), name


def test_each_file_has_its_own_random_stream(tmp_path):
    a = C.make_demo_corpus(tmp_path / "a", seed=0, **SMALL)
    b = C.make_demo_corpus(tmp_path / "b", seed=0, **{**SMALL, "n_rewrite_pairs": 80, "n_mmlu": 20})
    assert a["dghs"].read_bytes() == b["dghs"].read_bytes()
    assert a["toxigen_test"].read_bytes() == b["toxigen_test"].read_bytes()
    assert a["pretrain"].read_bytes() == b["pretrain"].read_bytes()


@pytest.mark.parametrize("kwargs, match", [
    ({"n_dghs": 100}, r"demo\.n_dghs = 100: must be an integer at least 1[0-9][0-9]"),
    ({"n_dghs": "600"}, r"demo\.n_dghs = '600'"),
    ({"n_toxigen_test": 3}, r"demo\.n_toxigen_test = 3"),
    ({"n_mmlu": 0}, r"demo\.n_mmlu = 0: must be an integer between 1 and"),
    ({"n_mmlu": 1000}, r"demo\.n_mmlu = 1000"),
    ({"n_rewrite_pairs": True}, r"demo\.n_rewrite_pairs = True"),
    ({"seed": -1}, r"demo\.seed = -1"),
])
def test_bad_sizes_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        C.make_demo_corpus(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # nothing written


def test_min_dghs_rows_is_exact(tmp_path):
    n = C.min_dghs_rows()
    df = C.dghs_table(0, n)
    assert set(df.loc[df["label"] == "hate", "target"]) >= set(SPEC_ID_TARGETS)
    with pytest.raises(ConfigError, match="too small"):
        C.dghs_table(0, n - 1)


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        C.make_demo_corpus(tmp_path / "f", **SMALL)
