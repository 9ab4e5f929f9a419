"""`hspd` command line: detoxify a user's own corpus with the workflow's code path.

    hspd detoxify toxic.jsonl clean.jsonl --base Qwen/Qwen2.5-3B-Instruct@<rev> --toxic results/models/toxic

Candidates are written to ``OUTPUT.candidates.jsonl`` as each text finishes, so an interrupted run resumes
where it stopped when the same command is typed again. The output is a drop-in replacement of the input:
the same columns with the text replaced, plus provenance columns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

from hspd.errors import HSPDError

log = logging.getLogger("hspd")


def model_spec(arg: str) -> dict:
    """``path/to/dir`` (existing) → local; ``org/name@revision`` → hub; ``package:name`` → a Python package."""
    if arg.startswith("package:"):
        return {"package": arg.split(":", 1)[1]}
    if Path(arg).exists():
        return {"path": arg}
    # Written as a path (./x, ../x, /x, ~/x) or under a folder that exists here: a missing local path, not a hub id.
    first = Path(arg).parts[0] if Path(arg).parts else ""
    if arg.startswith((".", "/", "~")) or (len(Path(arg).parts) > 1 and Path(first).is_dir()):
        raise HSPDError(f"local path {arg!r} does not exist ({Path(arg).resolve()})")
    hub, _, revision = arg.partition("@")
    if hub.count("/") != 1:
        raise HSPDError(f"{arg!r} is neither an existing local path nor a hub id of the form org/name[@revision]")
    return {"hub": hub, "revision": revision or "main"}


def scorer_spec(arg: str) -> dict:
    return {"checkpoint": arg} if Path(arg).exists() else {"detoxify": arg}


def check_texts(df, column: str, path) -> list[int]:
    """Row numbers (1-based, as a user counts data rows) whose text is missing, not a string, or blank."""
    bad = []
    for i, value in enumerate(df[column].tolist(), start=1):
        if not isinstance(value, str) or not value.strip():
            bad.append(i)
    return bad


def texts_digest(originals) -> str:
    """SHA-256 of the (id, text) pairs to rewrite: candidates made from other texts are never reused."""
    digest = hashlib.sha256()
    for text_id, text in zip(originals["id"], originals["text"]):
        digest.update(f"{text_id}\x1f{text}\x1e".encode())
    return digest.hexdigest()


def detoxify_command(args) -> int:
    import pandas as pd

    from hspd.io import ResumableJsonl, read_json, read_table, write_json, write_table
    from hspd.models import check_same_tokenizer, load_causal_lm, load_tokenizer, set_offline
    from hspd.rewrite import DEFAULT_CANDIDATES, rewrite_shard
    from hspd.scoring import SentenceEmbedder, ToxicityScorer, rank_candidates
    from hspd.socd import parse_method

    inp, out = Path(args.input), Path(args.output)
    candidates_path = out.with_name(out.name + ".candidates.jsonl")
    if out.exists() and not args.force:
        raise HSPDError(f"{out} exists; pass --force to overwrite it")
    if out.resolve() == inp.resolve():
        raise HSPDError(f"{out} is the input file; write the detoxified corpus elsewhere")
    parse_method(args.method)
    set_offline(not args.online)

    # Everything about the input is checked before any model is loaded.
    df = read_table(inp, [args.text_column] + ([args.id_column] if args.id_column else []), what="input")
    if df.empty:
        raise HSPDError(f"input {inp}: no rows")
    bad = check_texts(df, args.text_column, inp)
    if bad and not args.skip_bad_rows:
        raise HSPDError(f"input {inp}: {len(bad)} row(s) with a missing or empty `{args.text_column}`: rows "
                        f"{bad[:20]}{' …' if len(bad) > 20 else ''}; fix them or pass --skip-bad-rows")
    # Ids join candidates to texts: the --id-column, an existing `id` column, or row numbers.
    id_column = args.id_column or ("id" if "id" in df.columns else None)
    ids = df[id_column] if id_column else pd.Series([f"row-{i}" for i in range(1, len(df) + 1)])
    if ids.isna().any():
        raise HSPDError(f"input {inp}: rows {(ids.index[ids.isna()] + 1).tolist()[:20]} have no `{id_column}`")
    if ids.duplicated().any():
        raise HSPDError(f"input {inp}: duplicate ids in `{id_column}`: {ids[ids.duplicated()].head(5).tolist()}")
    originals = df.drop(columns=[id_column] if id_column else []).rename(columns={args.text_column: "text"})
    originals.insert(0, "id", ids.values)
    originals = originals.drop(index=[i - 1 for i in bad]).reset_index(drop=True)
    if bad:
        log.warning("skipping %d row(s) with no text: %s", len(bad), bad)

    base_spec = model_spec(args.base)
    toxic_spec = model_spec(args.toxic) if args.toxic else None
    if args.method != "prompt" and toxic_spec is None:
        raise HSPDError(f"method {args.method} needs --toxic (the small toxic model)")
    temperatures, samples = DEFAULT_CANDIDATES[args.variant]
    # Candidates are reused (resumed, or kept when only λ changes) only if they were made the same way.
    settings = {"method": args.method, "variant": args.variant, "base": base_spec, "toxic": toxic_spec,
                "seed": args.seed, "max_new_tokens": args.max_new_tokens, "k_min": args.k_min,
                "temperatures": list(temperatures), "samples_per_temperature": samples,
                "texts_sha256": texts_digest(originals)}
    settings_path = candidates_path.with_name(candidates_path.name + ".settings.json")
    settings = json.loads(json.dumps(settings))
    if candidates_path.exists() and (not settings_path.exists() or read_json(settings_path) != settings):
        raise HSPDError(f"{candidates_path} was made from other texts or settings ({settings_path}); delete it to "
                        "start over, or repeat the command that made it")
    # A partial file carries its own settings: one made another way is refused, never mixed in or dropped.
    if ResumableJsonl(candidates_path, settings={"cli": settings}).is_stale():
        raise HSPDError(f"{candidates_path}.partial was made from other texts or settings; delete it and its "
                        ".units index to start over, or repeat the command that made it")
    # Tokenizers, the scorer and the embedder load before decoding, so a wrong path or a toxic model with another
    # tokenizer fails in seconds, not after hours.
    tokenizer = load_tokenizer(base_spec, "base")
    if toxic_spec is not None and args.method != "prompt":
        check_same_tokenizer(tokenizer, load_tokenizer(toxic_spec, "toxic"), "base", "toxic")
    scorer = ToxicityScorer(scorer_spec(args.scorer))
    embedder = SentenceEmbedder(model_spec(args.embedder), "embedder")

    if candidates_path.exists():
        log.info("reusing the finished candidates in %s", candidates_path)
    else:
        base = load_causal_lm(base_spec, "base", device=args.device)
        toxic = load_causal_lm(toxic_spec, "toxic", device=args.device) if args.method != "prompt" else None
        rewrite_shard(originals[["id", "text"]], base_model=base, toxic_model=toxic, tokenizer=tokenizer,
                      method=args.method, variant=args.variant, temperatures=temperatures,
                      samples_per_temperature=samples, seed=args.seed, max_new_tokens=args.max_new_tokens,
                      batch_texts=args.batch_size, k_min=args.k_min, cd_alpha=0.1, cd_beta=0.5,
                      settings={"cli": settings}, stale="error", output_path=candidates_path, progress=True)
        del base, toxic
        write_json(settings, settings_path)  # only beside finished candidates: a failed run leaves none

    candidates = read_table(candidates_path, ["id", "candidate", "text", "valid"], what="candidates")
    corpus, _, report = rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=args.lam,
                                        batch_size=64)
    # Without an id column the output keeps `id` = row-N, so dropped texts can be traced to input rows.
    corpus = corpus.rename(columns={"text": args.text_column, "id": id_column or "id"})
    report_path = write_json({**report, **settings, "lam": args.lam, "skipped_rows": bad},
                             out.with_name(out.name + ".report.json"))
    if corpus.empty:
        raise HSPDError(f"no text got a valid candidate (each one hit --max-new-tokens {args.max_new_tokens} or "
                        f"came back empty): see {report_path} and {candidates_path}; {out} was not written")
    write_table(corpus, out)
    log.info("wrote %s (%d of %d texts); report %s", out, len(corpus), len(df), report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hspd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("detoxify", help="rewrite a corpus with SoCD (or CD / prompting) and fusion ranking")
    d.add_argument("input", help="JSONL, CSV or Parquet file")
    d.add_argument("output", help="JSONL, CSV or Parquet file (format from the suffix)")
    d.add_argument("--text-column", default="text")
    d.add_argument("--id-column", default=None, help="a column of unique ids (default: row numbers)")
    d.add_argument("--base", required=True, help="base model: local folder or hub id org/name[@revision]")
    d.add_argument("--toxic", default=None, help="toxic model (same tokenizer as the base)")
    d.add_argument("--method", default="socd-emd", help="prompt, cd, or socd-<divergence> (default socd-emd)")
    d.add_argument("--variant", default="paper", choices=["paper", "code"])
    d.add_argument("--lam", type=float, default=0.5, help="fusion weight λ in [0, 1]")
    d.add_argument("--k-min", type=int, default=10)
    d.add_argument("--max-new-tokens", type=int, default=256)
    d.add_argument("--batch-size", type=int, default=8, help="texts per decoding batch (each with all its candidates)")
    d.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 …")
    d.add_argument("--scorer", default="original", help="Detoxify model name, or a Detoxify-format checkpoint file")
    d.add_argument("--embedder", default="Qwen/Qwen3-Embedding-0.6B", help="sentence embedder: folder, hub id or package:NAME")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--skip-bad-rows", action="store_true", help="drop rows with no text (listed in the report)")
    d.add_argument("--online", action="store_true", help="allow hub downloads (default: offline)")
    d.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Numbers are checked before anything is read or loaded.
    bad = [f"--lam must be in [0, 1], got {args.lam}"] if not 0.0 <= args.lam <= 1.0 else []
    bad += [f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}"
            for name in ("k_min", "max_new_tokens", "batch_size") if getattr(args, name) < 1]
    if bad:
        print(f"hspd: error: {bad[0]}", file=sys.stderr)
        return 2
    try:
        return detoxify_command(args)
    except HSPDError as exc:
        print(f"hspd: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
