"""The demo's outputs: console tables, the comparison against SymViT, the plots and the Markdown report."""

from __future__ import annotations

from typing import Any

from robustbench_rpc.demo.run import VARIANTS, DemoResult

DEMO_NOTE = (
    "AlexNet's ImageNet-C errors do not apply to the digits, so the mCE here is relative to the SymViT baseline "
    "(SymViT = 100; lower is better): for each corruption, the model's error summed over severities divided by "
    "SymViT's, averaged over the corruptions."
)


def write_demo_outputs(result: DemoResult, console: Any) -> None:
    """Print the demo's tables and comparison, write plots and ``report.md`` into the demo's output folder."""
    from rich.markup import escape

    from robustbench_rpc.atomic import atomic_write_bytes
    from robustbench_rpc.reporting.comparison import comparison_display
    from robustbench_rpc.reporting.exports import to_markdown, to_rich_table
    from robustbench_rpc.reports import write_report
    from robustbench_rpc.results.compare import compare

    tables = result.tables
    console.print(to_rich_table(tables["summary"].reset_index(), "Clean and corrupted digits (top-1 %)"))
    console.print(DEMO_NOTE)
    console.print(to_rich_table(tables["corruptions"], "Accuracy per corruption (top-1 %, mean over severities)"))
    console.print(to_rich_table(tables["attacks"], "Robust accuracy under attack (top-1 %)"))
    if "audit" in tables:
        audit = tables["audit"]
        flagged = audit[audit["status"] == "flag"]
        console.print(to_rich_table(audit.drop(columns=["evidence", "detail", "unit"]),
                                    "Audit of the attack evaluation (flag: value > threshold)"))
        for _, row in flagged.iterrows():
            console.print(escape(f"flag: {row['model']} {row['check']} {row['eps']}: {row['detail']}"))
    for summary, variant in zip(result.audits, VARIANTS, strict=False):
        for row in summary.lowest:
            console.print(escape(f"{variant.label}: lowest robust accuracy at {row['eps'] * 255:.4g}/255: "
                                 f"{row['robust_top1']:.2f}% ({row['attack']}, {row['n']} samples); worst case "
                                 f"over {row['attacks']} attack cells {row['worst_case']:.2f}% on "
                                 f"{row['worst_case_n']} samples"))
    if "diagnostics" in tables:
        console.print(to_rich_table(tables["diagnostics"], "Attention diagnostics per layer (heads averaged; "
                                    "the report has the plot)", digits=3))
    comparison = compare(result.model_dirs, baseline=VARIANTS[0].label)
    headline = comparison[comparison["condition"].isin(["clean", "attack"])]
    console.print(to_rich_table(comparison_display(headline),
                                "Differences against SymViT, clean and attacks (paired bootstrap 95% CI, McNemar p;"
                                " every cell is in the report)"))

    report = write_report(result.model_dirs, result.out / "report.md", baseline=VARIANTS[0].label)
    text = report.read_text()
    models = "\n".join(f"- `{v.label}`: {v.description} (`{v.architecture}`)" for v in VARIANTS)
    section = (
        "## Demo: SymViT vs RPC-SymViT on digits\n\n"
        "Embedded data: scikit-learn's 1,797 handwritten digits (8x8, upsampled to 32x32 RGB), the fixed test "
        "split of 450 images. Models:\n\n"
        f"{models}\n\n{to_markdown(tables['summary'].reset_index())}\n\n{DEMO_NOTE}\n\n"
    )
    head, sep, rest = text.partition("\n## ")
    atomic_write_bytes(report, (head + "\n" + section + sep.lstrip("\n") + rest if sep else text + section).encode())
    result.report = report
    result.plots = sorted((result.out / "report_plots").glob("*.png"))
