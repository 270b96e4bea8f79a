"""Draw a built Comparison (tables.py) as markdown, LaTeX, CSV or a rich table.

Values are percentages; a cell is "value ± uncertainty" plus a significance star and "(n=…)" when the cell has
fewer seeds than its row. The best value per column is bold (markdown, LaTeX) or green (rich).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlbench_cli.compare.model import EXTRA_COLUMNS, Column, Comparison, Row


def _fmt_pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _fmt_extra(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    if name in ("pass@k", "maj@k"):
        return _fmt_pct(value)
    if name == "entropy":
        return f"{value:.3f}"
    if name == "wall_time":
        if value < 120:
            return f"{value:.0f} s"
        return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.2f} h"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}k" if value >= 1e4 else f"{value:.0f}"


@dataclass
class _Parts:
    value: str
    unc: str | None
    marks: str
    best: bool


def _parts(row: Row, col: Column) -> _Parts | None:
    cell = row.cells.get(col.key)
    if cell is None:
        return None
    unc = None
    if cell.uncertainty is not None and math.isfinite(cell.uncertainty):
        unc = _fmt_pct(cell.uncertainty)
    marks = "*" if cell.significant else ""
    if cell.kind != "reference" and cell.n_seeds != row.n_seeds:
        marks += f" (n={cell.n_seeds})"
    return _Parts(_fmt_pct(cell.value), unc, marks, cell.best)


def _headers(comp: Comparison) -> list[str]:
    return [
        "Method",
        "Seeds",
        *[c.header for c in comp.columns],
        *[EXTRA_COLUMNS[e] for e in comp.extra_columns],
    ]


def _label(row: Row) -> str:
    return row.label + (" (baseline)" if row.is_baseline else "")


def _seeds(row: Row) -> str:
    return "" if row.kind == "reference" else str(row.n_seeds)


def _bold_legend(comp: Comparison) -> list[str]:
    return [
        line.replace("best value per column highlighted", "best value per column in bold")
        for line in comp.legend
    ]


def render_markdown(comp: Comparison) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    headers = _headers(comp)
    lines = [
        "| " + " | ".join(esc(h) for h in headers) + " |",
        "|" + "|".join([":---", "---:"] + ["---:"] * (len(headers) - 2)) + "|",
    ]
    for row in comp.rows:
        cells = [esc(_label(row)), _seeds(row)]
        for col in comp.columns:
            p = _parts(row, col)
            if p is None:
                cells.append("–")
                continue
            text = p.value + (f" ± {p.unc}" if p.unc else "")
            # Escaped so a significance star after bold text is not read as emphasis.
            cells.append((f"**{text}**" if p.best else text) + esc(p.marks).replace("*", "\\*"))
        cells += [_fmt_extra(e, row.extras.get(e)) for e in comp.extra_columns]
        lines.append("| " + " | ".join(cells) + " |")
    legend = [("\\" + line) if line.startswith("*") else line for line in _bold_legend(comp)]  # not a bullet
    return "\n".join(lines) + "\n\n" + "\n\n".join(legend) + "\n"


_LATEX_SPECIAL = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "–": "--",
    "±": r"$\pm$",
    "…": r"\ldots{}",
    "<": r"$<$",
    ">": r"$>$",
    # A row starting with "[" right after "\\" would be read as its optional argument.
    "[": "{[}",
    "]": "{]}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(comp: Comparison) -> str:
    headers = _headers(comp)
    spec = "l" + "r" * (len(headers) - 1)
    out = [
        "% rlbench compare; needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"  \centering",
        r"  \small",
        f"  \\begin{{tabular}}{{{spec}}}",
        r"    \toprule",
        "    " + " & ".join(latex_escape(h) for h in headers) + r" \\",
        r"    \midrule",
    ]
    previous_kind = None
    for row in comp.rows:
        if previous_kind is not None and row.kind != previous_kind:
            out.append(r"    \midrule")
        previous_kind = row.kind
        cells = [latex_escape(_label(row)), _seeds(row)]
        for col in comp.columns:
            p = _parts(row, col)
            if p is None:
                cells.append("--")
                continue
            text = rf"\textbf{{{p.value}}}" if p.best else p.value
            if p.unc:
                text += rf" {{\scriptsize $\pm$ {p.unc}}}"
            if p.marks.startswith("*"):
                text += r"$^{*}$"
            if "(n=" in p.marks:
                text += " " + latex_escape(p.marks.lstrip("*").strip())
            cells.append(text)
        cells += [latex_escape(_fmt_extra(e, row.extras.get(e))) for e in comp.extra_columns]
        out.append("    " + " & ".join(cells) + r" \\")
    out += [
        r"    \bottomrule",
        r"  \end{tabular}",
        "  \\caption{" + " ".join(latex_escape(line) for line in _bold_legend(comp)) + "}",
        r"  \label{tab:rlbench-compare}",
        r"\end{table}",
    ]
    return "\n".join(out) + "\n"


def render_csv(comp: Comparison) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["method", "recipe_name", "kind", "seeds"]
    for col in comp.columns:
        header += [col.header, f"{col.header} ±"]
        if comp.baseline is not None:
            header.append(f"{col.header} p")
    header += list(comp.extra_columns)
    w.writerow(header)

    def num(x: float | None) -> str:  # percent, more precision than the display tables
        return "" if x is None or not math.isfinite(x) else f"{100 * x:.3f}"

    for row in comp.rows:
        line = [row.label, row.recipe_name or "", row.kind, _seeds(row)]
        for col in comp.columns:
            cell = row.cells.get(col.key)
            line += [num(cell.value) if cell else "", num(cell.uncertainty) if cell else ""]
            if comp.baseline is not None:
                line.append(f"{cell.test.p_value:.4g}" if cell and cell.test else "")
        for e in comp.extra_columns:
            v = row.extras.get(e)
            line.append(num(v) if e in ("pass@k", "maj@k") else ("" if v is None else f"{v:.6g}"))
        w.writerow(line)
    return buf.getvalue()


def render_rich_table(comp: Comparison, title: str | None = None) -> Any:
    """A rich.table.Table (rich is already a CLI dependency, imported lazily to keep startup light)."""
    from rich.table import Table
    from rich.text import Text

    # Text (not str) so "[paper]" in labels and legend is not parsed as rich markup.
    table = Table(
        title=title or f"rlbench compare ({comp.metric}, %)",
        caption=Text("\n".join(comp.legend)),
        caption_justify="left",
    )
    for i, h in enumerate(_headers(comp)):
        if i == 0:
            longest = max((len(_label(r)) for r in comp.rows), default=10)
            table.add_column(h, justify="left", overflow="fold", min_width=min(longest, 24))
        else:
            table.add_column(h, justify="right", no_wrap=True)
    for row in comp.rows:
        style = "dim italic" if row.kind == "reference" else None
        cells: list[Any] = [Text(_label(row), style=style or ""), _seeds(row)]
        for col in comp.columns:
            p = _parts(row, col)
            if p is None:
                cells.append("–")
                continue
            text = p.value + (f" ± {p.unc}" if p.unc else "") + p.marks
            cells.append(Text(text, style="bold green" if p.best else (style or "")))
        cells += [_fmt_extra(e, row.extras.get(e)) for e in comp.extra_columns]
        table.add_row(*cells, end_section=row.kind == "base")
    return table
