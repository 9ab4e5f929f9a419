"""benchmarks/: the per-rule table and the start-up summary checked by hand; the SoCD benchmark run at toy size."""

import importlib.util
import json
from pathlib import Path

import pytest

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _load(name="rule_table"):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(path: Path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t0\n" for s, rss in rows))


def test_rule_table_by_hand(tmp_path):
    rt = _load()
    _bench(tmp_path / "toxigen_eval/test/a/seed42.tsv", (10.0, 500.0))
    _bench(tmp_path / "toxigen_eval/val/b/seed42.tsv", (20.0, 700.0))
    _bench(tmp_path / "train_toxic.tsv", (5.0, 900.0))
    _bench(tmp_path / "mmlu/x.tsv", (1.0, 100.0), (3.0, 200.0))  # a repeated benchmark: two runs
    table = rt.rule_table(tmp_path)
    assert list(table.index) == ["toxigen_eval", "train_toxic", "mmlu"]
    assert table.loc["toxigen_eval"].tolist() == [2, 15.0, 30.0, 700.0]
    assert table.loc["mmlu"].tolist() == [2, 2.0, 4.0, 200.0]
    md = rt.markdown(table).splitlines()
    assert md[2] == "| toxigen_eval | 2 | 15.0 | 30 | 700 |"
    assert md[-1] == "| all | 5 | | 39 | 900 |"


def test_rule_table_says_what_is_wrong(tmp_path):
    rt = _load()
    with pytest.raises(SystemExit, match="no benchmark files"):
        rt.rule_table(tmp_path)
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(SystemExit, match=r"x.tsv: not a Snakemake benchmark file \(no 's' column\)"):
        rt.rule_table(tmp_path)


def test_startup_summary_by_hand(tmp_path):
    bs = _load("bench_startup")
    _bench(tmp_path / "empty/0.tsv", (0.2, 50.0))
    _bench(tmp_path / "empty/1.tsv", (0.4, 50.0))
    _bench(tmp_path / "model/0.tsv", (5.0, 400.0))
    assert bs.summarise(tmp_path) == {"empty": {"jobs": 2, "mean_s": pytest.approx(0.3), "min_s": 0.2},
                                      "model": {"jobs": 1, "mean_s": 5.0, "min_s": 5.0}}


def test_startup_workflow_runs_its_jobs(tmp_path):
    """The throw-away workflow runs under Snakemake and each job writes its benchmark file (the job that does
    nothing only: seconds, not the torch kinds)."""
    bs = _load("bench_startup")
    bs.write_workflow(tmp_path, "no-model-needed", repeats=2, kinds=("empty",))
    bs.run(tmp_path)
    assert (tmp_path / "out/empty/1.txt").read_text() == "empty"
    table = bs.summarise(tmp_path / "bench")
    assert list(table) == ["empty"] and table["empty"]["jobs"] == 2 and table["empty"]["min_s"] > 0


def test_import_times_by_hand():
    """The watched modules' cumulative times, in seconds, from a hand-written ``-X importtime`` log; a module
    outside the watch list and a malformed line are ignored."""
    bs = _load("bench_startup")
    log = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       120 |     900000 | torch",
        "import time:        40 |      1500000 |   torch._dynamo",
        "import time:        10 |         20 | json",
        "import time: garbage",
        "import time:      3000 |    2500000 | transformers",
    ])
    assert bs.import_times(log) == {"torch": 0.9, "transformers": 2.5, "torch._dynamo": 1.5}
    assert list(bs.import_times(log)) == ["torch", "transformers", "torch._dynamo"]


def test_socd_benchmark_runs_at_toy_size(tmp_path):
    """bench_socd.py end to end at the real vocabulary with toy models and a few tokens: every run, the profile
    (fast step and reference on the same logits) and the combiner's share of the decode are reported."""
    bench = _load("bench_socd")
    out = tmp_path / "socd.json"
    result = bench.main(["--device", "cpu", "--base-hidden", "32", "--base-layers", "1", "--toxic-hidden", "32",
                         "--toxic-layers", "1", "--samples", "1", "--prompt-tokens", "6", "--new-tokens", "3",
                         "--repeats", "1", "--profile", "--profile-steps", "2", "--json", str(out)])
    assert set(result["seconds"]) == {"base", "toxic", "socd", "reference"}
    assert result["setting"]["rows"] == 6 and result["setting"]["vocab"] == bench.QWEN_VOCAB
    assert 0 < result["combiner_ms_per_step_in_decode"] < 1e3 * result["seconds"]["socd"]
    assert result["socd_over_base_plus_toxic"] > 0 and 10 <= result["socd_mean_k"] <= bench.QWEN_VOCAB // 2
    assert set(result["combiner_profile"]) == {"fused", "unfused"}
    assert json.loads(out.read_text())["seconds"] == result["seconds"]
