"""Tables and figures on fixture metrics."""

from pathlib import Path

import pandas as pd
import pytest

from hspd import plots, tables
from hspd.errors import DataError
from hspd.metrics import METRICS, aggregate_over_seeds

BASES = ("qwen2.5-0.5b", "qwen2.5-3b")
METHODS = ("prompt", "cd", "socd-emd")


def runs() -> pd.DataFrame:
    """Two seeds per (target, system), metric values that differ by seed; gpt2-xl × 2 bases × 3 methods, llama."""
    rows = []
    cells = [("gpt2-xl", "original"), *[("gpt2-xl", f"ft-{m}_{b}") for b in BASES for m in METHODS],
             ("llama2-7b", "original"), ("llama2-7b", "ft-socd-emd_qwen2.5-3b")]
    for k, (target, system) in enumerate(cells):
        for seed in (42, 43):
            d = 0.01 * (seed - 42)
            rows.append({"target": target, "system": system, "seed": seed, "tp_id": 0.5 - 0.02 * k + d,
                         "tp_ood": 0.4 - 0.01 * k + d, "emt_id": 0.45 + d, "emt_ood": 0.41 + d,
                         "ppl": 17.5 + k + 10 * d,
                         "dist1": 0.26, "dist2": 0.43, "dist3": 0.46, "mmlu": 0.3181 + d})
    return pd.DataFrame(rows)


@pytest.fixture()
def summary():
    return aggregate_over_seeds(runs())


def test_table1_cells_and_bundle(summary, tmp_path):
    rows = [("gpt2-xl", "original"), ("gpt2-xl", "ft-socd-emd_qwen2.5-3b")]
    t = tables.table1(summary, rows, names=["GPT2-XL", "HSPD (SoCD-EMD)"])
    assert list(t.columns[:3]) == ["Model", "tp_id_mean", "tp_id_std"]
    assert t["tp_id_mean"].tolist() == pytest.approx([0.505, 0.385])
    cells = tables.format_cells(t)
    assert list(cells.columns) == ["Model", "TP ID", "TP OOD", "EMT ID", "EMT OOD", "PPL", "Dist-1", "Dist-2",
                                   "Dist-3", "MMLU"]
    assert cells.loc[0, "TP ID"] == "0.51 ± 0.01"        # std of (0.50, 0.51) = 0.00707
    assert cells.loc[0, "MMLU"] == "32.31 ± 0.71"        # a fraction printed as a percentage
    assert cells.loc[0, "Dist-1"] == "0.26 ± 0.00"

    paths = tables.write_table_bundle(t, tmp_path / "table1", caption="Table 1: GPT2-XL")
    assert [p.name for p in paths] == ["table1.csv", "table1.md", "table1.tex"]
    csv = pd.read_csv(paths[0])
    assert csv["tp_id_mean"].tolist() == pytest.approx([0.505, 0.385])  # numbers, not strings
    md = paths[1].read_text()
    assert md.startswith("Table 1: GPT2-XL\n")
    assert "| GPT2-XL | 0.51 ± 0.01 |" in md and "|---|---:|" in md
    tex = paths[2].read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"0.51 $\pm$ 0.01" in tex


def test_single_seed_std_is_a_dash(tmp_path):
    s = aggregate_over_seeds(runs().query("seed == 42"))
    cells = tables.format_cells(tables.table1(s, [("gpt2-xl", "original")]))
    assert cells.loc[0, "Model"] == "gpt2-xl" and cells.loc[0, "TP ID"] == "0.50 ± –"
    tex = tables.to_latex(tables.table1(s, [("gpt2-xl", "original")]))
    assert r"0.50 $\pm$ --" in tex


def test_missing_metric_prints_a_dash(summary):
    s = summary.copy()
    s.loc[0, "mmlu_mean"] = float("nan")
    cells = tables.format_cells(tables.table1(s, [("gpt2-xl", "original")]))
    assert cells.loc[0, "MMLU"] == "–"


def test_table3_groups_targets(summary):
    rows = [("gpt2-xl", "original"), ("gpt2-xl", "ft-socd-emd_qwen2.5-3b"),
            ("llama2-7b", "original"), ("llama2-7b", "ft-socd-emd_qwen2.5-3b")]
    t = tables.table3(summary, rows, target_names={"llama2-7b": "LLaMA2-7B"},
                      method_names={"original": "Original", "ft-socd-emd_qwen2.5-3b": "HSPD"})
    assert t[["Target", "Method"]].values.tolist() == [["gpt2-xl", "Original"], ["gpt2-xl", "HSPD"],
                                                       ["LLaMA2-7B", "Original"], ["LLaMA2-7B", "HSPD"]]
    body = tables.to_latex(t, caption="Table 3", label="tab:3").split(r"\midrule")
    assert len(body) == 3  # header rule + one rule between the two targets
    assert "\ngpt2-xl & Original" in body[1] and "\n & HSPD" in body[1]
    assert "\nLLaMA2-7B & Original" in body[2] and r"\label{tab:3}" in body[0]


def test_tables_bad_input(summary):
    with pytest.raises(DataError, match=r"\('gpt2-xl', 'nope_x'\)"):
        tables.table1(summary, [("gpt2-xl", "nope_x")])
    with pytest.raises(DataError, match=r"missing column\(s\) \['tp_ood_mean'\]"):
        tables.table1(summary.drop(columns="tp_ood_mean"), [("gpt2-xl", "original")])
    with pytest.raises(DataError, match="1 rows but 2 names"):
        tables.table1(summary, [("gpt2-xl", "original")], names=["a", "b"])
    with pytest.raises(DataError, match="no <metric>_mean"):
        tables.write_table_bundle(pd.DataFrame({"Model": ["x"]}), "unused")


def test_paper_reference_rows(tmp_path):
    ref = tables.paper_reference_rows()
    assert (ref["Source"] == "HSPD paper, Table 1 (GPT2-XL)").all()
    assert ref["Model"].tolist() == ["GPT2-XL", "UniDetox", "HSPD"]
    hspd = ref.iloc[2]
    toxicity = [hspd[f"{m}_mean"] for m in ("tp_id", "tp_ood", "emt_id", "emt_ood")]
    assert toxicity == [0.18, 0.19, 0.20, 0.22]
    assert hspd["ppl_mean"] == 21.45 and hspd["mmlu_mean"] == pytest.approx(0.3083)
    cells = tables.format_cells(ref)
    assert cells.loc[0, "MMLU"] == "31.81" and cells.loc[1, "Dist-3"] == "0.37"  # no std: the mean alone
    md = tables.write_table_bundle(ref, tmp_path / "paper", caption="The paper's numbers")[1].read_text()
    assert "| HSPD paper, Table 1 (GPT2-XL) | HSPD | 0.18 |" in md
    assert set(f"{m}_mean" for m in METRICS) <= set(ref.columns)


# --- Figures ----------------------------------------------------------------------------------------------

def direct_toxicity_table() -> pd.DataFrame:
    rows = [{"corpus": "raw", "base": "raw", "method": "raw"}]
    rows += [{"corpus": f"{m}_{b}", "base": b, "method": m} for b in BASES for m in METHODS]
    df = pd.DataFrame(rows)
    for k, dim in enumerate(plots.DETOXIFY_DIMENSIONS):
        df[dim] = [0.8 / (k + 1)] + [0.1 * (j + 1) / (k + 1) for j in range(len(rows) - 1)]
    return df


def is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_written(summary, tmp_path):
    fig2 = plots.plot_divergences(summary, tmp_path / "figs" / "fig2.png", target="gpt2-xl")
    fig3 = plots.plot_direct_toxicity(direct_toxicity_table(), tmp_path / "fig3.png")
    scatter = plots.plot_ppl_vs_tp(summary, tmp_path / "ppl_tp.png")
    one_seed = plots.plot_ppl_vs_tp(aggregate_over_seeds(runs().query("seed == 42")), tmp_path / "one.png",
                                    tp="tp_ood")
    assert all(is_png(p) for p in (fig2, fig3, scatter, one_seed))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["fig2.png", "fig3.png", "figs", "one.png", "ppl_tp.png"]


def test_figures_bad_input(summary, tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(DataError, match=r"missing column\(s\) \['emt_ood_std'\]"):
        plots.plot_divergences(summary.drop(columns="emt_ood_std"), out, target="gpt2-xl")
    with pytest.raises(DataError, match="pass target="):
        plots.plot_divergences(summary, out)
    with pytest.raises(DataError, match="no rows for target 'opt'"):
        plots.plot_divergences(summary, out, target="opt")
    with pytest.raises(DataError, match=r"missing column\(s\) \['threat'\]"):
        plots.plot_direct_toxicity(direct_toxicity_table().drop(columns="threat"), out)
    with pytest.raises(DataError, match="no rewritten corpus"):
        plots.plot_direct_toxicity(direct_toxicity_table().iloc[:1], out)
    with pytest.raises(DataError, match=r"missing column\(s\) \['ppl_std'\]"):
        plots.plot_ppl_vs_tp(summary.drop(columns="ppl_std"), out)
    assert not out.exists()


def test_comparison_table_bolds_the_best_of_each_target(summary, tmp_path):
    rows = [("gpt2-xl", "original", "original"), ("gpt2-xl", "ft-cd_qwen2.5-3b", "HSPD cd"),
            ("gpt2-xl", "ft-socd-emd_qwen2.5-3b", "HSPD socd-emd"),
            ("llama2-7b", "original", "original"), ("llama2-7b", "ft-socd-emd_qwen2.5-3b", "HSPD socd-emd")]
    t = tables.comparison_table(summary, rows)
    assert t[["Target", "System"]].values.tolist()[1] == ["gpt2-xl", "HSPD cd"]
    best = tables.best_cells(t)
    # tp_id falls with the fixture's row index; emt_id is the same everywhere (a tie: every row is bold).
    assert {(i, m) for i, m in best if m == "tp_id"} == {(2, "tp_id"), (4, "tp_id")}
    assert {i for i, m in best if m == "emt_id"} == {0, 1, 2, 3, 4}
    assert ("ppl" not in {m for _, m in best})
    md = tables.to_markdown(t, bold=best)
    assert "| gpt2-xl | HSPD socd-emd | **0.39 ± 0.01** |" in md
    assert "| gpt2-xl | original | 0.51 ± 0.01 |" in md
    tex = tables.write_table_bundle(t, tmp_path / "t1", bold=best)[2].read_text()
    assert r"\textbf{0.41 $\pm$ 0.01}" in tex
    with pytest.raises(DataError, match="no results"):
        tables.comparison_table(summary, [("gpt2-xl", "ft-raw", "raw control")])


def test_table_rows_follow_the_config():
    from hspd import config as cfg
    from hspd import systems as S

    paper = cfg.load(Path(__file__).resolve().parents[1] / "config.yaml")
    main = paper["experiment"]["main"]
    rows = S.table_rows(paper, main, ["gpt2-xl"])
    assert [s for _, s, _ in rows] == ["original", "ft-raw", "ft-unidetox-a0.1-lr5e-5", "ft-unidetox-a0.1-lr1e-5",
                                       "ft-gpt2-samples", "dexperts", "task-arithmetic", "lm-steer",
                                       "detoxigen", "preprompt-short", "preprompt-long", *(f"ft-{m}_qwen2.5-3b" for m in main["methods"])]
    assert rows[2][2] == "UniDetox (α 0.1, lr 5e-5)" and rows[-1][2] == "HSPD socd-emd (qwen2.5-3b)"
    uni = S.table_rows(paper, main, ["opt-6.7b"], kinds=("original", "gpt2-samples", "unidetox", "dexperts"))
    assert [s for _, s, _ in uni] == ["original", "ft-unidetox-a0.1-lr5e-5", "ft-unidetox-a0.1-lr1e-5",
                                      "ft-gpt2-samples", "dexperts"]


def test_validation_sweep_figure(tmp_path):
    from hspd.selection import selection_record

    table = pd.DataFrame({"value": [40, 120, 200], "tp": [0.5, 0.3, 0.35], "ppl": [20.0, 25.0, 40.0]})
    records = [selection_record(target="gpt2-xl", system=s, chooser="gpt2-xl", how="validation", value=120,
                                table=table) for s in ("ft-raw", "ft-socd-emd_q")]
    assert is_png(plots.plot_validation_sweeps(records, tmp_path / "sweep.png"))
    assert is_png(plots.plot_validation_sweeps([], tmp_path / "none.png"))
    swept = [{**r, "system": "dexperts", "ppl_cap": 30.0} for r in records[:1]]
    assert is_png(plots.plot_swept_settings(swept, tmp_path / "swept.png"))
    assert is_png(plots.plot_swept_settings([], tmp_path / "none2.png"))
    bad = [{**records[0], "table": [{"value": 40, "tp": 0.5}]}]
    with pytest.raises(DataError, match=r"missing column\(s\) \['ppl'\]"):
        plots.plot_validation_sweeps(bad, tmp_path / "bad.png")
