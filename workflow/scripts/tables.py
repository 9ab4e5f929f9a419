"""Table 1 and Table 3 of the paper (CSV, Markdown, LaTeX) from the aggregated metrics."""

from pathlib import Path

from hspd.io import read_table
from hspd.jobs import rule_job
from hspd.tables import paper_reference_rows, paper_tables, to_markdown, write_table_bundle

with rule_job(snakemake) as log:
    summary = read_table(snakemake.input.summary, ["target", "corpus"], what="metrics summary")
    t1, t3 = paper_tables(summary, snakemake.params.main)
    stems = {name: Path(getattr(snakemake.output, name)).with_suffix("") for name in ("table1", "table3")}
    write_table_bundle(t1, stems["table1"], caption="Table 1: detoxification results (mean ± std over seeds)",
                       label="tab:table1")
    write_table_bundle(t3, stems["table3"], caption="Table 3: detoxification results per target and method "
                       "(mean ± std over seeds)", label="tab:table3")
    # The paper's own numbers under Table 1, for comparison at a glance.
    with open(snakemake.output.table1, "a", encoding="utf-8") as fh:
        fh.write("\n" + to_markdown(paper_reference_rows(), caption="For comparison: the HSPD paper's numbers"))
    log.info("\n%s\n%s", Path(snakemake.output.table1).read_text(), Path(snakemake.output.table3).read_text())
