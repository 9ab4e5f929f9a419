"""Tables and JSON between rules: CSV / JSONL / Parquet readers, atomic writers, append-and-resume files.

Every table that flows between rules has an ``id`` column that never changes from the split to the tables.
Writers are atomic (write to a temporary file in the same folder, then rename), so a killed job never leaves a
half-written output that Snakemake would take for a finished one. Resumable outputs (rewrite shards, ToxiGen
generations) are JSONL files appended one finished unit at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pandas as pd

from hspd.errors import DataError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: str | os.PathLike) -> str:
    """The format of a table file from its suffix: ``csv``, ``tsv``, ``jsonl`` or ``parquet``."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported table format {suffix!r}; use one of {sorted(TABLE_SUFFIXES)}")
    return TABLE_SUFFIXES[suffix]


def read_table(path: str | os.PathLike, required: Sequence[str] = (), *, what: str = "table") -> pd.DataFrame:
    """Read a CSV, TSV, JSONL or Parquet file into a DataFrame.

    Args:
        path: the file; its suffix decides the format.
        required: columns that must be present; a missing one is a ``DataError`` naming the file and column.
        what: a word for the error messages ("DGHS file", "corpus", ...).
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise DataError(f"{what} {path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path}: the file is empty")
    try:
        if fmt == "csv":
            df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype_backend="numpy_nullable")
        elif fmt == "tsv":
            df = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_parquet(path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise DataError(f"{what} {path}: cannot be read as {fmt}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} {path}: missing column(s) {missing}; found {list(df.columns)}"
        )
    return df


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame atomically; the suffix decides the format (JSONL keeps unicode readable)."""
    path = Path(path)
    fmt = table_format(path)
    tmp = _atomic_target(path)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "tsv":
            df.to_csv(tmp, sep="\t", index=False)
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in df.to_dict(orient="records"):
                    fh.write(json.dumps(_plain(rec), ensure_ascii=False) + "\n")
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write JSON atomically, indented and with sorted keys so diffs stay small."""
    return write_text(json.dumps(_plain(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n", path)


def read_json(path: str | os.PathLike):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON: {exc}") from exc


def _plain(obj):
    """Convert numpy / pandas scalars and containers into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return obj.item()
        except (ValueError, AttributeError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if obj is pd.NA:
        return None
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the records of a JSONL file; a torn last line (a killed writer) is skipped, any other bad
    line is an error naming the file and line number."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and not line.endswith("\n"):
                return  # the writer was killed mid-line; the unit will be redone
            raise DataError(f"{path}: line {i} is not valid JSON: {exc}") from exc


class ResumableJsonl:
    """An append-only JSONL file of finished units, for jobs that a cluster may kill.

    A *unit* (a text to rewrite, a prompt to continue) is written as all its records at once, then flushed
    and fsynced, so after a kill the file holds whole units plus at most one torn line, which ``open``
    truncates. ``done`` is the set of unit keys already present; a restarted job skips them.

    The finished file is moved into place by ``finalize`` so that Snakemake sees the output only when the
    whole shard is done; the partial file lives beside it as ``<output>.partial``.
    """

    def __init__(self, output: str | os.PathLike, key: str = "id"):
        self.output = Path(output)
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.key = key
        self.done: set = set()
        self._fh = None

    def open(self) -> "ResumableJsonl":
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.partial.exists():
            good = []
            with open(self.partial, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # torn tail
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    good.append(line)
                    self.done.add(rec[self.key])
            # Rewrite without the torn tail so appends start on a clean line.
            with open(self.partial, "w", encoding="utf-8") as fh:
                fh.writelines(good)
        self._fh = open(self.partial, "a", encoding="utf-8")
        return self

    def write_unit(self, records: Iterable[dict]) -> None:
        """Append all records of one finished unit, durably."""
        lines = [json.dumps(_plain(r), ensure_ascii=False) + "\n" for r in records]
        self._fh.write("".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        for line in lines:
            self.done.add(json.loads(line)[self.key])

    def finalize(self) -> Path:
        """Close the partial file and move it to the output path."""
        self.close()
        if not self.partial.exists():
            self.partial.touch()
        os.replace(self.partial, self.output)
        return self.output

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()
