"""Dist-1/2/3 of the continuations per prompt, averaged over prompts (SPEC §5)."""

from hspd.io import read_table, write_json
from hspd.jobs import rule_job
from hspd.metrics import distinct_n, distinct_n_compat

with rule_job(snakemake) as log:
    prompts = read_table(snakemake.input.prompts, ["id", "text"], what="ToxiGen prompts").set_index("id")["text"]
    gens = read_table(snakemake.input.generations, ["id", "sample", "continuation"], what="generations")
    grouped = gens.sort_values(["id", "sample"]).groupby("id", sort=False)["continuation"].apply(list)
    if snakemake.params.compat:
        result = {f"dist{n}": distinct_n_compat(prompts.loc[grouped.index].tolist(), grouped.tolist(), n) for n in (1, 2, 3)}
    else:
        result = {f"dist{n}": distinct_n(grouped.tolist(), n) for n in (1, 2, 3)}
    log.info("%s", result)
    write_json({**result, "compat": snakemake.params.compat, "prompts": len(grouped)}, snakemake.output[0])
