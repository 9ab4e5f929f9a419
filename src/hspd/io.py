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

import logging

import pandas as pd

from hspd.errors import DataError

log = logging.getLogger("hspd")

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file 0600; results are shared files on a cluster: the mode a plain open() would give.
    os.fchmod(fd, 0o666 & ~_umask())
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


class StalePartialError(DataError):
    """A partial file was made with other settings and the caller asked to keep it (``stale="error"``)."""


class ResumableJsonl:
    """An append-only JSONL file of finished units, for jobs that a cluster may kill.

    A *unit* (a text to rewrite, a prompt's samples) counts as done only when it is *committed*: its records are
    written, flushed and fsynced to ``<output>.partial``, then one line naming the unit and its record count is
    written, flushed and fsynced to the index ``<output>.partial.units``. After a kill at any byte, ``open`` keeps
    exactly the committed units (a unit whose records or index line were cut is redone whole) and truncates both
    files to them, so appends start clean and the finished file equals an uninterrupted run's byte for byte.

    The index's first line holds the ``settings`` the partial was made with (models, decoding settings, inputs:
    whatever changes its records). A partial made with other settings (or without an index) is discarded, and
    logged, with ``stale="discard"`` (the rules: Snakemake already decided the job must run), or refused with
    ``stale="error"`` (the CLI: nothing a user made is dropped silently).

    ``finalize`` moves the finished file into place, so Snakemake sees the output only when the whole shard is
    done, and removes the index.
    """

    def __init__(self, output: str | os.PathLike, key: str = "id", *, settings=None, stale: str = "discard"):
        if stale not in ("discard", "error"):
            raise ValueError(f"stale must be 'discard' or 'error', got {stale!r}")
        self.output = Path(output)
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.index = self.output.with_name(self.output.name + ".partial.units")
        self.key = key
        self.settings = json.loads(json.dumps(_plain(settings if settings is not None else {}), sort_keys=True))
        self.stale = stale
        self.done: set = set()
        self._fh = self._ih = None

    def _committed(self) -> list[tuple[object, int]] | None:
        """(unit, record count) of every committed unit, or ``None`` when the partial is stale."""
        if not self.index.exists():
            return None
        units, settings = [], None
        for i, line in enumerate(self.index.read_bytes().splitlines(keepends=True)):
            if not line.endswith(b"\n"):
                break  # torn index line: that unit is not committed
            try:
                rec = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                break
            if i == 0:
                settings = rec.get("settings")
                continue
            units.append((rec["unit"], int(rec["records"])))
        return units if settings == self.settings else None

    def is_stale(self) -> bool:
        """Whether a partial file exists that was made with other settings: its stamp lacks one of this object's
        settings or has another value there (a cheap check before any model loads: the caller may know only part
        of the stamp)."""
        if not self.partial.exists():
            return False
        stored = self._stamp()
        return not isinstance(stored, dict) or any(stored.get(k) != v for k, v in self.settings.items())

    def _stamp(self):
        """The settings in the index's first line; ``None`` without a readable index."""
        try:
            with open(self.index, "rb") as fh:
                first = fh.readline()
            return json.loads(first.decode("utf-8"))["settings"] if first.endswith(b"\n") else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def restore(self) -> Path:
        """Move a finished output back to a committed partial (every unit of it done), e.g. when a later step
        of the same job failed and Snakemake would delete the output: the rerun then skips decoding."""
        records = list(iter_jsonl(self.output))
        units: list[tuple[object, int]] = []
        for rec in records:
            if units and units[-1][0] == rec[self.key]:
                units[-1] = (units[-1][0], units[-1][1] + 1)
            else:
                units.append((rec[self.key], 1))
        self._write_index(units)
        os.replace(self.output, self.partial)
        return self.partial

    def _write_index(self, units) -> None:
        """The index as ``open`` reads it: the settings line, then one line per committed (unit, record count)."""
        write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in
                           [{"settings": self.settings}, *({"unit": u, "records": n} for u, n in units)]), self.index)

    def open(self) -> "ResumableJsonl":
        self.output.parent.mkdir(parents=True, exist_ok=True)
        units = self._committed() if self.partial.exists() else None
        if self.partial.exists() and units is None:
            if self.stale == "error":
                raise StalePartialError(f"{self.partial} was made with other settings (or by an older version); "
                                        f"delete it and {self.index.name} to start over, or repeat the command "
                                        "that made it")
            log.warning("%s was made with other settings: discarded, every unit is redone", self.partial)
        kept_lines, kept_units = [], []
        if units:
            # Bytes, not text: a kill can cut a multi-byte character; only whole lines are decoded.
            lines = [line.decode("utf-8", errors="replace") for line in
                     self.partial.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]
            pos = 0
            for unit, n in units:
                chunk = lines[pos:pos + n]
                try:
                    whole = len(chunk) == n and all(json.loads(line)[self.key] == unit for line in chunk)
                except (json.JSONDecodeError, KeyError, TypeError):
                    whole = False
                if not whole:
                    break  # records cut after the index line: impossible by the write order, redone if seen
                kept_lines += chunk
                kept_units.append((unit, n))
                pos += n
            dropped = len(lines) - pos
            if dropped:
                log.info("%s: %d record line(s) of an unfinished unit dropped", self.partial, dropped)
        # Rewrite both files to the committed units, so appends start on clean lines.
        write_text("".join(kept_lines), self.partial)
        self._write_index(kept_units)
        self.done = {u for u, _ in kept_units}
        self._fh = open(self.partial, "a", encoding="utf-8")
        self._ih = open(self.index, "a", encoding="utf-8")
        return self

    def write_unit(self, records: Iterable[dict], unit=None) -> None:
        """Append all records of one finished unit (``unit``: its key, default the records' own), durably, then
        commit it."""
        records = list(records)
        keys = {_plain(r[self.key]) for r in records}
        if unit is None:
            if len(keys) != 1:
                raise DataError(f"{self.partial}: a unit's records must share one {self.key!r}, got {sorted(keys)[:5]}")
            unit = keys.pop()
        elif keys - {unit}:
            raise DataError(f"{self.partial}: unit {unit!r} has records of {sorted(keys - {unit})[:5]}")
        for fh, text in ((self._fh, "".join(json.dumps(_plain(r), ensure_ascii=False) + "\n" for r in records)),
                         (self._ih, json.dumps({"unit": _plain(unit), "records": len(records)},
                                               ensure_ascii=False) + "\n")):
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        self.done.add(_plain(unit))

    def finalize(self) -> Path:
        """Close the partial file and move it to the output path."""
        self.close()
        if not self.partial.exists():
            self.partial.touch()
        os.replace(self.partial, self.output)
        self.index.unlink(missing_ok=True)
        return self.output

    def close(self) -> None:
        for name in ("_fh", "_ih"):
            if getattr(self, name) is not None:
                getattr(self, name).close()
                setattr(self, name, None)

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
