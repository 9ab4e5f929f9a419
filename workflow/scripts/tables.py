"""Table 1 (every system per target), Table 3 (HSPD's methods on the other targets) and UniDetox's layout, as
CSV, Markdown and LaTeX, the best TP/EMT of each target in bold; the HSPD paper's numbers as a separate block."""

from pathlib import Path

from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.tables import best_cells, comparison_table, paper_reference_rows, to_markdown, write_table_bundle

CAPTIONS = {
    "table1": "Table 1: every system per target (mean ± std over seeds; best TP / EMT per target in bold)",
    "table3": "Table 3: HSPD's rewriting methods per target (mean ± std over seeds)",
    "unidetox": "UniDetox's Tables 1–2 layout: the original, GPT-2 samples and UniDetox per target",
}

with rule_job(snakemake) as log:
    summary = read_table(snakemake.input.summary, ["target", "system"], what="metrics summary")
    for name, caption in CAPTIONS.items():
        rows = [tuple(r) for r in snakemake.params.rows[name]]
        table = comparison_table(summary, rows)
        stem = Path(getattr(snakemake.output, name)).with_suffix("")
        write_table_bundle(table, stem, caption=caption, label=f"tab:{name}", bold=best_cells(table))
    # The paper's own numbers under Table 1, for comparison at a glance.
    with open(snakemake.output.table1, "a", encoding="utf-8") as fh:
        fh.write("\n" + to_markdown(paper_reference_rows(), caption="For comparison: the HSPD paper's numbers"))
    for name in CAPTIONS:
        log.info("\n%s", Path(getattr(snakemake.output, name)).read_text())
