"""Fusion ranking of the candidates: λ(1 − toxicity) + (1 − λ)·cos; writes the detoxified corpus (SPEC §3)."""

import pandas as pd

from hspd.io import read_table, write_json, write_table
from hspd.jobs import rule_job
from hspd.scoring import SentenceEmbedder, ToxicityScorer, rank_candidates

with rule_job(snakemake) as log:
    p = snakemake.params
    originals = read_table(snakemake.input.corpus, ["id", "text"], what="ID corpus")
    candidates = pd.concat([read_table(f, ["id", "candidate", "text", "valid"], what="candidate shard")
                            for f in snakemake.input.shards], ignore_index=True)
    scorer = ToxicityScorer(p.scorer)
    embedder = SentenceEmbedder(p.embedder, p.embedder_name)
    corpus, scored, report = rank_candidates(originals, candidates, scorer=scorer, embedder=embedder, lam=p.lam,
                                             batch_size=snakemake.resources.batch_size)
    log.info("kept %d of %d texts; %s", len(corpus), len(originals), report)
    write_table(corpus, snakemake.output.corpus)
    write_table(scored, snakemake.output.scores)
    write_json({**report, "lam": p.lam, "scorer": scorer.provenance(), "embedder": embedder.provenance()},
               snakemake.output.report)
