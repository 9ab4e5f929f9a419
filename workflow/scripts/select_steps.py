"""The step count of one fine-tuned system: the lowest validation TP of the choosing target's sweep, or the
config's preset, or the only candidate (SPEC §6). Writes the choice with the validation table it was made on."""

from hspd.io import read_json, write_json
from hspd.jobs import rule_job
from hspd.selection import choose_steps, selection_record, sweep_table

with rule_job(snakemake) as log:
    plan, wc, i = snakemake.params.plan, snakemake.wildcards, snakemake.input
    table = None
    if plan["how"] == "validation":
        table = sweep_table(list(plan["values"]), [read_json(f) for f in i.toxigen], [read_json(f) for f in i.perplexity])
        value = choose_steps(table)
        log.info("validation sweep of %s on %s:\n%s", wc.system, plan["chooser"], table.to_string(index=False))
    else:
        value = plan["value"]
    record = selection_record(target=wc.target, system=wc.system, chooser=plan["chooser"], how=plan["how"],
                              value=value, table=table)
    log.info("%s for %s: %s steps (%s)", wc.system, wc.target, value, plan["how"])
    write_json(record, snakemake.output[0])
