"""The chosen value of one system (SPEC §6): a step count (the lowest validation TP of the choosing target's sweep)
or a β / λ (the lowest validation TP among values whose PPL is at most the cap), or the config's preset, or the
only candidate. Writes the choice with the validation table it was made on."""

from hspd.io import read_json, write_json
from hspd.jobs import rule_job
from hspd.metrics import read_perplexities
from hspd.selection import choose_steps, choose_with_ppl_cap, ppl_cap, selection_record, sweep_table

RULES = {"steps": "lowest validation TP, ties to the fewest steps",
         "ppl_cap": "lowest validation TP with PPL ≤ the cap, ties to the weakest value"}

with rule_job(snakemake) as log:
    plan, wc, i = snakemake.params.plan, snakemake.wildcards, snakemake.input
    table, cap = None, None
    if plan["how"] == "validation":
        seeds = snakemake.params.seeds
        ppl = read_perplexities(i.perplexity, seeds)
        table = sweep_table(list(plan["values"]), [read_json(f) for f in i.toxigen], ppl)
        if plan["rule"] == "ppl_cap":
            cap = ppl_cap(read_perplexities(i.cap, seeds), snakemake.params.ppl_cap_factor)
            value = choose_with_ppl_cap(table, cap)
        else:
            value = choose_steps(table)
        log.info("validation sweep of %s on %s (cap %s):\n%s", wc.system, plan["chooser"], cap,
                 table.to_string(index=False))
    else:
        value = plan["value"]
    record = selection_record(target=wc.target, system=wc.system, chooser=plan["chooser"], how=plan["how"],
                              value=value, table=table, rule=RULES[plan["rule"]])
    record["ppl_cap"] = cap
    log.info("%s for %s: %s (%s)", wc.system, wc.target, value, plan["how"])
    write_json(record, snakemake.output[0])
