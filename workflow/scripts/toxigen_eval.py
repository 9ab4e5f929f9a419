"""One evaluation seed of one model on the ToxiGen prompts (SPEC §5), in one job so the model loads once: 25
continuations of ≤ 20 new tokens per prompt (resumable, stamped with the settings that made them; the scorer is
not one of them), their Detoxify toxicity (prompt removed), TP and EMT per category, and Dist-n."""

import gc

from hspd.evaluate import generation_settings, toxigen_generate
from hspd.io import ResumableJsonl, read_table, write_json, write_table
from hspd.jobs import job_settings, rule_job
from hspd.metrics import continuations_by_prompt, diversity_metrics
from hspd.scoring import ToxicityScorer, score_toxigen
from hspd.treatments import load_treated, model_prompts

with rule_job(snakemake) as log:
    p, wc, out = snakemake.params, snakemake.wildcards, snakemake.output
    prompts = read_table(snakemake.input.prompts, ["id", "text", "category", "distribution"], what="ToxiGen prompts")
    name = f"{wc.target}/{wc.system}/{wc.setting}"
    # The system: a chosen checkpoint, edited weights, a steering matrix, a second model or a soft-prompted view
    # of the same one to decode with, or a pre-prompt.
    system = load_treated(p.model, p.treatment, name=name, selection=snakemake.input.selection,
                          trained=snakemake.input.trained)
    decoder = None
    if system.decoder is not None:
        decoder = system.decoder(max_new_tokens=p.max_new_tokens, top_p=p.top_p, top_k=p.top_k)
    # A pre-prompt is part of the model's input only: continuations, scores and PPL see the ToxiGen prompt alone.
    seen = model_prompts(prompts, system.prefix)
    log.info("%s: %d prompts × %d samples, seed %s", name, len(prompts), p.n_samples, wc.seed)
    # The continuations' stamp: sampling settings, model, system; not the scorer, which reads them afterwards.
    stamp_of = job_settings(snakemake, ignore=("batch", "offline", "scorer", "threshold", "dist_compat"),
                            skip_inputs=("scorer",))
    sampling = dict(n_samples=p.n_samples, max_new_tokens=p.max_new_tokens, top_p=p.top_p, temperature=p.temperature,
                    top_k=p.top_k, seed=int(wc.seed), decoder=decoder, settings=stamp_of)
    toxigen_generate(system.model, system.tokenizer, seen, batch_prompts=snakemake.resources.batch_prompts,
                     output_path=out.generations, progress=True, **sampling)
    stamp = generation_settings(**sampling)
    del system, decoder, sampling
    gc.collect()
    try:
        gens = read_table(out.generations, ["id", "sample", "continuation"], what="generations")
        scored, metrics = score_toxigen(gens, prompts, ToxicityScorer(p.scorer), threshold=p.threshold,
                                        batch_size=snakemake.resources.score_batch_size, progress=True)
        ids, conts = continuations_by_prompt(gens, prompts["id"].tolist())
        diversity = diversity_metrics(conts, prompts.set_index("id").loc[ids, "text"].tolist(), compat=p.dist_compat)
    except BaseException:
        # Snakemake deletes a failed job's outputs: keep the continuations as a finished partial file, so the
        # rerun scores them instead of sampling them again.
        ResumableJsonl(out.generations, settings=stamp).restore()
        raise
    log.info("%s\n%s", metrics, diversity)
    write_table(scored, out.scores)
    write_json(metrics, out.metrics)
    write_json(diversity, out.diversity)
