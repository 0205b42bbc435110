"""Exports of a view: a rich console table, CSV, Markdown, LaTeX (booktabs), JSON (records) and Parquet."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.atomic import atomic_write, atomic_write_bytes
from robustbench_rpc.errors import UserError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FORMATS = ("table", "csv", "md", "latex", "json", "parquet")
#: Text shown for a missing value in the human-readable formats.
MISSING = "-"
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def format_cell(value: Any, digits: int = 2) -> str:
    """Return the human-readable text of one value: floats with ``digits`` decimals, missing values as ``-``."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if value != 0 and abs(value) < 10.0 ** (1 - digits):
            return f"{value:.{digits + 2}g}"  # small values (eps, norms) keep their significant digits
        return f"{value:.{digits}f}"
    try:
        import pandas as pd

        if pd.isna(value):
            return MISSING
    except (TypeError, ValueError):
        pass
    return str(value)


def _is_numeric(frame: pd.DataFrame, column: str) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]))


def _text_rows(frame: pd.DataFrame, digits: int) -> list[list[str]]:
    return [[format_cell(v, digits) for v in row] for row in frame.itertuples(index=False, name=None)]


def to_markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """Return a pipe table (GitHub Markdown), numbers right-aligned."""
    header = [str(c) for c in frame.columns]
    align = ["---:" if _is_numeric(frame, c) else ":---" for c in frame.columns]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "| " + " | ".join(align) + " |"]
    lines += [line(row) for row in _text_rows(frame, digits)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (underscores, percent signs, ...)."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(frame: pd.DataFrame, digits: int = 2) -> str:
    """Return a booktabs ``tabular`` (requires ``\\usepackage{booktabs}``)."""
    spec = "".join("r" if _is_numeric(frame, c) else "l" for c in frame.columns)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join(latex_escape(str(c)) for c in frame.columns) + " \\\\")
    lines.append("\\midrule")
    for row in _text_rows(frame, digits):
        lines.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_rich_table(frame: pd.DataFrame, title: str | None = None, digits: int = 2) -> Any:
    """Return a :class:`rich.table.Table` of the frame."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None)
    for column in frame.columns:
        table.add_column(escape(str(column)), justify="right" if _is_numeric(frame, column) else "left")
    for row in _text_rows(frame, digits):
        table.add_row(*(escape(cell) for cell in row))
    return table


def table_width(frame: pd.DataFrame, digits: int = 2) -> int:
    """Return the console width that shows every column of the frame's rich table without wrapping."""
    widths = [len(str(c)) for c in frame.columns]
    for row in _text_rows(frame, digits):
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths) + 1


def print_table(frame: pd.DataFrame, title: str | None = None, digits: int = 2) -> None:
    """Print the frame as a rich table to stdout (no wrapping when stdout is not a terminal)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(80, table_width(frame, digits)))
    console.print(to_rich_table(frame, title, digits))


def render_text(frame: pd.DataFrame, fmt: str, title: str | None = None, digits: int = 2) -> str:
    """Return the text of a frame in a text format (``table``, ``csv``, ``md``, ``latex`` or ``json``)."""
    check_format(fmt)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "md":
        return to_markdown(frame, digits)
    if fmt == "latex":
        return to_latex(frame, digits)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    if fmt == "table":
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=max(80, table_width(frame, digits)), no_color=True).print(
            to_rich_table(frame, title, digits)
        )
        return buffer.getvalue()
    raise UserError(f"Format {fmt!r} is binary; write it to a file with --out.")


def check_format(fmt: str) -> None:
    """Raise :class:`UserError` for an unknown export format."""
    if fmt not in FORMATS:
        raise UserError(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}.")


def check_output_path(out: Path) -> None:
    """Raise :class:`UserError` when ``out`` cannot be written (missing or unwritable folder, a directory)."""
    import os

    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UserError(f"Output path {out} is a directory; expected a file name.")
    if not parent.is_dir():
        raise UserError(f"Cannot write {out}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK):
        raise UserError(f"Cannot write {out}: the folder {parent} is not writable.")


def with_notes(text: str, fmt: str, notes: list[str] | None) -> str:
    """Append ``notes`` (e.g. the threat model) under a table in the human formats (md, latex, table)."""
    if not notes or fmt not in ("md", "latex", "table"):
        return text
    if fmt == "md":
        return text + "\n" + "\n".join(f"_{note}_" for note in notes) + "\n"
    if fmt == "latex":
        return text + "\n".join(f"\\par\\footnotesize {latex_escape(note)}" for note in notes) + "\n"
    return text + "\n".join(notes) + "\n"


def export(frame: pd.DataFrame, fmt: str, out: Path | None = None, title: str | None = None,
           notes: list[str] | None = None) -> str | None:
    """Write the frame to ``out`` atomically in ``fmt``, or return its text when ``out`` is None.

    ``parquet`` needs ``out``. The frame is written as it is (no index); ``notes`` follow the table in Markdown,
    LaTeX and plain tables (the data formats carry the threat model in their rows).
    """
    check_format(fmt)
    if out is None:
        if fmt == "parquet":
            raise UserError("Format parquet is binary; give an output file with --out.")
        return with_notes(render_text(frame, fmt, title), fmt, notes)
    out = Path(out)
    check_output_path(out)
    try:
        if fmt == "parquet":
            table_frame = frame.copy()
            table_frame.columns = [str(c) for c in table_frame.columns]
            atomic_write(out, lambda tmp: table_frame.to_parquet(tmp, index=False))
        else:
            atomic_write_bytes(out, with_notes(render_text(frame, fmt, title), fmt, notes).encode())
    except OSError as exc:
        raise UserError(f"Cannot write {out}: {exc.strerror or exc}.") from exc
    return None
