"""Choosing hyper-parameters on ToxiGen validation, never on test (SPEC §6).

A sweep is a table with one row per candidate ``value`` (a step count, a β, a λ …) and its validation figures
``tp`` (TP over all four domains, mean over validation seeds) and ``ppl``. A selection rule reads the validation
runs of every candidate, chooses, and writes the choice with the table it was chosen on; the test evaluation and
(for targets that do not sweep) the fine-tuning read that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from hspd.errors import ConfigError, DataError

TABLE_COLUMNS = ("value", "tp", "ppl")


def _check_table(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"selection table: missing column(s) {missing}; found {list(table.columns)}")
    if table.empty:
        raise DataError("selection table: no candidates to choose from")
    if table["value"].duplicated().any():
        raise DataError(f"selection table: value {_plain(table.loc[table['value'].duplicated(), 'value'].iloc[0])!r} "
                        "appears more than once")
    if table["tp"].isna().any():
        raise DataError(f"selection table: no TP for value(s) {table.loc[table['tp'].isna(), 'value'].tolist()}")
    return table


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def choose_steps(table: pd.DataFrame):
    """The step count with the lowest validation TP; ties go to the fewest steps (UniDetox, SPEC §6)."""
    table = _check_table(table)
    best = table.sort_values(["tp", "value"], kind="stable").index[0]
    return _plain(table.at[best, "value"])


def choose_with_ppl_cap(table: pd.DataFrame, ppl_cap: float):
    """The value with the lowest validation TP among those whose validation PPL is at most ``ppl_cap``; ties go
    to the value nearest zero (the weakest setting). UniDetox §3.4: the cap is 1.1 × the highest PPL of the
    target's UniDetox settings.

    Raises DataError naming the cap and the lowest PPL when no value qualifies."""
    table = _check_table(table)
    if not ppl_cap > 0:
        raise ConfigError(f"ppl_cap must be positive, got {ppl_cap}")
    ok = table[table["ppl"] <= ppl_cap]
    if ok.empty:
        raise DataError(f"no candidate has validation PPL ≤ {ppl_cap:.4g} (lowest: {table['ppl'].min():.4g} at value "
                        f"{_plain(table.loc[table['ppl'].idxmin(), 'value'])!r}); widen the sweep or the cap")
    best = ok.assign(_distance=ok["value"].abs()).sort_values(["tp", "_distance"], kind="stable").index[0]
    return _plain(table.at[best, "value"])


def ppl_cap(reference_perplexities: Sequence[Mapping], factor: float = 1.1) -> float:
    """UniDetox §3.4's cap: ``factor`` × the highest validation PPL among the reference runs (the target's
    UniDetox settings)."""
    if not reference_perplexities:
        raise DataError("ppl_cap: no reference validation runs to set the cap from")
    if factor < 1:
        raise ConfigError(f"ppl_cap factor must be ≥ 1, got {factor}")
    return float(factor * max(float(p["ppl"]) for p in reference_perplexities))


def tp_all_domains(toxigen: Mapping) -> float:
    """TP over all four ToxiGen domains: the unweighted mean of the per-category TP (SPEC §6)."""
    per = toxigen.get("per_category")
    if not per:
        raise DataError("toxigen metrics: no per_category figures to average over domains")
    return float(sum(c["tp"] for c in per.values()) / len(per))


def sweep_table(values: Sequence, toxigen: Sequence[Mapping], perplexity: Sequence[Mapping]) -> pd.DataFrame:
    """One row per candidate from its validation runs (several per value when there are several validation
    seeds, value-major in ``values`` order): ``value, tp, ppl, tp_id, tp_ood, n_runs``, means over the runs."""
    if not values:
        raise DataError("sweep: no candidate values")
    if len(toxigen) != len(perplexity) or len(toxigen) % len(values):
        raise DataError(f"sweep: {len(toxigen)} toxigen and {len(perplexity)} perplexity results for "
                        f"{len(values)} values")
    per = len(toxigen) // len(values)
    rows = []
    for i, value in enumerate(values):
        tox, ppl = toxigen[i * per:(i + 1) * per], perplexity[i * per:(i + 1) * per]
        rows.append({"value": value, "tp": sum(map(tp_all_domains, tox)) / per,
                     "ppl": sum(p["ppl"] for p in ppl) / per, "tp_id": sum(t["tp_id"] for t in tox) / per,
                     "tp_ood": sum(t["tp_ood"] for t in tox) / per, "n_runs": per})
    return pd.DataFrame(rows)


def selection_record(*, target: str, system: str, chooser: str, how: str, value, table: pd.DataFrame | None = None,
                     rule: str = "lowest validation TP, ties to the fewest steps") -> dict:
    """What a selection rule writes: the choice, how it was made, and the validation table it was made on."""
    if how not in ("validation", "preset", "only candidate"):
        raise ConfigError(f"selection: unknown way {how!r}")
    return {"target": target, "system": system, "chosen_on": chooser, "how": how, "rule": rule if how == "validation"
            else None, "value": _plain(value), "table": [] if table is None else table.to_dict(orient="records")}


def read_selection(path: str | os.PathLike) -> dict:
    from hspd.io import read_json

    record = read_json(path)
    if not isinstance(record, dict) or "value" not in record:
        raise DataError(f"{path}: not a selection record (no 'value')")
    return record


def chosen_step(path: str | os.PathLike) -> int:
    value = read_selection(path)["value"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{path}: the chosen value {value!r} is not a step count")
    return value


def _files(selection) -> list:
    """A rule's selection input (one path, a list, or nothing) as a list."""
    return [selection] if isinstance(selection, (str, os.PathLike)) else list(selection or [])


def checkpoint_spec(model: Mapping[str, Any], selection: Sequence[str] | str | None) -> dict:
    """The model an evaluation loads: ``model`` itself, or with a selection file, its ``step<N>`` checkpoint
    (``model`` is then a fine-tuning run's directory)."""
    files = _files(selection)
    if not files:
        return dict(model)
    if len(files) != 1 or "path" not in model:
        raise ConfigError(f"a chosen checkpoint needs one selection file and a run directory, got {files}, {model}")
    path = Path(model["path"]) / f"step{chosen_step(files[0])}"
    if not path.is_dir():
        raise DataError(f"{path}: the chosen checkpoint ({files[0]}) is not in the fine-tuning run {model['path']}")
    return {"path": str(path)}


def training_steps(save_steps: Sequence[int], selection: Sequence[str] | str | None) -> list[int]:
    """The steps a fine-tuning run saves: every candidate (a sweep), or only the chosen one."""
    files = _files(selection)
    if not files:
        return sorted({int(s) for s in save_steps})
    return [chosen_step(files[0])]
