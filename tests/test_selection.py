"""Choosing hyper-parameters on validation: the selection rules (ties, the PPL cap, no qualifying value), sweep
tables from validation runs, and what the evaluation and fine-tuning read from a selection record."""

import pandas as pd
import pytest

from hspd import selection as sel
from hspd.errors import ConfigError, DataError
from hspd.io import write_json


def table(values, tps, ppls):
    return pd.DataFrame({"value": values, "tp": tps, "ppl": ppls})


def test_choose_steps_lowest_tp_ties_to_fewest_steps():
    assert sel.choose_steps(table([1000, 2000, 3000], [0.4, 0.2, 0.3], [10, 11, 12])) == 2000
    chosen = sel.choose_steps(table([3000, 1000, 2000], [0.2, 0.3, 0.2], [1, 1, 1]))
    assert chosen == 2000 and isinstance(chosen, int)


def test_choose_with_ppl_cap():
    t = table([-0.5, -0.3, -0.1, 0.0], [0.10, 0.15, 0.20, 0.40], [30.0, 18.0, 15.0, 12.0])
    assert sel.choose_with_ppl_cap(t, 20.0) == -0.3       # −0.5 is the least toxic but too disfluent
    assert sel.choose_with_ppl_cap(t, 30.0) == -0.5       # the cap is inclusive
    tie = table([0.2, -0.1, 0.1], [0.1, 0.1, 0.1], [1.0, 1.0, 1.0])
    assert sel.choose_with_ppl_cap(tie, 2.0) == -0.1      # ties: the value nearest zero, the weakest setting
    with pytest.raises(DataError, match=r"no candidate has validation PPL ≤ 11 \(lowest: 12 at value 0.0\)"):
        sel.choose_with_ppl_cap(t, 11.0)
    with pytest.raises(ConfigError, match="ppl_cap must be positive"):
        sel.choose_with_ppl_cap(t, 0.0)


def test_selection_bad_tables():
    with pytest.raises(DataError, match=r"missing column\(s\) \['ppl'\]"):
        sel.choose_steps(pd.DataFrame({"value": [1], "tp": [0.1]}))
    with pytest.raises(DataError, match="no candidates"):
        sel.choose_steps(table([], [], []))
    with pytest.raises(DataError, match="value 40 appears more than once"):
        sel.choose_steps(table([40, 40], [0.1, 0.2], [1, 1]))
    with pytest.raises(DataError, match=r"no TP for value\(s\) \[80\]"):
        sel.choose_steps(table([40, 80], [0.1, float("nan")], [1, 1]))


def toxigen(tps, tp_id=0.0, tp_ood=0.0):
    cats = ["race_nationalities", "religion", "gender_lgbtq", "disability"]
    return {"tp_id": tp_id, "tp_ood": tp_ood, "per_category": {c: {"tp": t} for c, t in zip(cats, tps)}}


def test_sweep_table_means_over_domains_and_seeds():
    # TP over all domains is the unweighted mean of the four categories; two validation seeds per value.
    runs = [toxigen([0.4, 0.4, 0.0, 0.0]), toxigen([0.2, 0.2, 0.2, 0.2]),
            toxigen([0.1, 0.1, 0.1, 0.1]), toxigen([0.3, 0.3, 0.3, 0.3])]
    ppl = [{"ppl": 10.0}, {"ppl": 14.0}, {"ppl": 20.0}, {"ppl": 30.0}]
    t = sel.sweep_table([40, 80], runs, ppl)
    assert t["tp"].tolist() == pytest.approx([0.2, 0.2]) and t["ppl"].tolist() == [12.0, 25.0]
    assert t["n_runs"].tolist() == [2, 2]
    assert sel.choose_steps(t) == 40
    with pytest.raises(DataError, match="3 toxigen and 2 perplexity results for 2 values"):
        sel.sweep_table([40, 80], runs[:3], ppl[:2])
    with pytest.raises(DataError, match="no per_category"):
        sel.tp_all_domains({"tp_id": 0.1})


def test_records_checkpoints_and_training_steps(tmp_path):
    t = table([40, 80], [0.3, 0.1], [10.0, 12.0])
    rec = sel.selection_record(target="llama", system="ft-raw", chooser="gpt2", how="validation",
                               value=sel.choose_steps(t), table=t)
    assert rec["value"] == 80 and rec["chosen_on"] == "gpt2" and rec["table"][1] == {"value": 80, "tp": 0.1, "ppl": 12.0}
    path = write_json(rec, tmp_path / "sel.json")
    run = tmp_path / "run"
    (run / "step80").mkdir(parents=True)
    assert sel.checkpoint_spec({"path": str(run)}, [str(path)]) == {"path": str(run / "step80")}
    assert sel.checkpoint_spec({"hub": "gpt2", "revision": "main"}, []) == {"hub": "gpt2", "revision": "main"}
    assert sel.training_steps([80, 40, 120], []) == [40, 80, 120]
    assert sel.training_steps([40, 120], [str(path)]) == [80]
    write_json({**rec, "value": 40}, tmp_path / "sel40.json")
    with pytest.raises(DataError, match="step40: the chosen checkpoint"):
        sel.checkpoint_spec({"path": str(run)}, [str(tmp_path / "sel40.json")])
    write_json({**rec, "value": 0.5}, tmp_path / "bad.json")
    with pytest.raises(DataError, match="0.5 is not a step count"):
        sel.training_steps([40], [str(tmp_path / "bad.json")])
    write_json({"chosen": 1}, tmp_path / "other.json")
    with pytest.raises(DataError, match="not a selection record"):
        sel.read_selection(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="unknown way"):
        sel.selection_record(target="a", system="b", chooser="a", how="test", value=1)
