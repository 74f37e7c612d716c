"""One self-contained HTML file: the report's sections, tables and interactive charts.

The Plotly JavaScript that the ``plotly`` package ships is embedded once, inline; the
stylesheet is inline; figures are inline JSON. The file needs no network access and no
other file to open: mail it, put it on a USB stick, open it on a plane.

Each figure is a ``<div class="gp-figure">`` whose data sit in a
``<script type="application/json">`` block beside it, drawn by one small loader script.
Numeric table cells carry their exact value in ``data-value`` (the text shows 3 significant
digits).

Example:
    >>> from gradprobe.report.content import Report, Section, Text
    >>> html = render_html(Report("t", sections=[Section("a", "A", [Text("hello")])]))
    >>> "<h2>A</h2>" in html, "https://cdn" in html.split("<script")[0]
    (True, False)
"""

from __future__ import annotations

import html as _html
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import plotly
import plotly.io as pio

from gradprobe.report.content import FigureSpec, Report, Section, TableSpec, Text
from gradprobe.report.plotly_figures import render
from gradprobe.report.tables import fmt

PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "showLink": False,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = """
:root { --fg: #1b1b1b; --muted: #555; --rule: #ddd; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial,
       sans-serif; color: var(--fg); background: #fff; }
header { padding: 1.5rem 2rem 0.5rem; border-bottom: 1px solid var(--rule); }
header h1 { margin: 0 0 0.25rem; font-size: 1.6rem; }
header p { margin: 0.2rem 0; color: var(--muted); }
nav ul { display: flex; flex-wrap: wrap; gap: 0.25rem 1.4rem; padding: 0; margin: 0.8rem 0;
         list-style: none; }
nav a { color: var(--accent); text-decoration: none; }
main { padding: 0 2rem 3rem; max-width: 1250px; }
section { border-bottom: 1px solid var(--rule); padding: 1rem 0 1.5rem; }
section h2 { margin: 0.6rem 0; font-size: 1.3rem; }
h3 { font-size: 1rem; margin: 1rem 0 0.3rem; }
p.text { max-width: 60rem; }
pre.text { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 13px; }
figure { margin: 1rem 0; }
ul.notes { color: var(--muted); font-size: 0.9rem; max-width: 60rem; }
figcaption { color: var(--muted); font-size: 0.9rem; max-width: 60rem; }
.gp-figure { width: 100%; min-height: 260px; }
table.gp-table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
table.gp-table th, table.gp-table td { border-bottom: 1px solid var(--rule);
    padding: 0.25rem 0.6rem; text-align: right; }
table.gp-table th { background: #f3f3f3; position: sticky; top: 0; }
table.gp-table td.text, table.gp-table th.text { text-align: left; }
.table-wrap { max-height: 32rem; overflow: auto; }
footer { padding: 1rem 2rem; color: var(--muted); font-size: 0.85rem; }
"""

_LOADER = """
(function () {
  var figs = document.querySelectorAll("div.gp-figure");
  for (var i = 0; i < figs.length; i++) {
    var div = figs[i];
    var spec = JSON.parse(document.getElementById(div.id + "-data").textContent);
    Plotly.newPlot(div, spec.data, spec.layout, CONFIG);
  }
})();
"""


@cache
def plotly_js() -> str:
    """The plotly.js bundle shipped inside the ``plotly`` Python package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</`` can close it early)."""
    text = obj if isinstance(obj, str) else json.dumps(obj, allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _esc(text: str) -> str:
    return _html.escape(text, quote=True)


def _text(block: Text) -> str:
    if block.pre:
        out = f'<pre class="text">{_esc(block.text)}</pre>'
    else:
        paragraphs = [p.strip() for p in block.text.split("\n\n") if p.strip()]
        out = "\n".join(f'<p class="text">{_esc(p)}</p>' for p in paragraphs)
    if block.items:
        out += '<ul class="notes">' + "".join(f"<li>{_esc(i)}</li>" for i in block.items)
        out += "</ul>"
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table_html(table: TableSpec) -> str:
    """A :class:`TableSpec` as an HTML table; numeric cells keep their exact value."""
    head = "".join(
        f'<th class="{"text" if not _numeric_column(table, key) else "num"}">{_esc(title)}</th>'
        for key, title in table.columns.items()
    )
    body = []
    for _, row in table.frame.iterrows():
        cells = []
        for key in table.columns:
            value = row.get(key)
            value = value.item() if hasattr(value, "item") else value
            if _is_number(value):
                exact = repr(float(value)) if isinstance(value, float) else str(value)
                text = fmt(value)
                if isinstance(value, float) and math.isnan(value):
                    text = "-"
                cells.append(f'<td data-key="{_esc(key)}" data-value="{exact}">{text}</td>')
            else:
                text = "-" if value is None else fmt(value)
                cells.append(f'<td class="text" data-key="{_esc(key)}">{_esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<figcaption>{_esc(table.caption)}</figcaption>" if table.caption else ""
    title = f"<h3>{_esc(table.title)}</h3>" if table.title else ""
    return (f'{title}<div class="table-wrap"><table class="gp-table"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>{caption}')


def _numeric_column(table: TableSpec, key: str) -> bool:
    if key not in table.frame.columns:
        return False
    return any(_is_number(v.item() if hasattr(v, "item") else v) for v in table.frame[key])


def figure_html(spec: FigureSpec, fig_id: str) -> str:
    """A figure's div, its JSON and its caption."""
    fig = render(spec)
    payload = pio.to_json(fig, validate=False, pretty=False)
    caption = f"<figcaption>{_esc(spec.caption)}</figcaption>" if spec.caption else ""
    return (
        f'<figure data-kind="{spec.kind}" data-slug="{_esc(spec.slug)}">'
        f'<div class="gp-figure" id="{fig_id}" aria-label="{_esc(spec.title)}"></div>'
        f'<script type="application/json" id="{fig_id}-data">{_script_json(payload)}</script>'
        f"{caption}</figure>"
    )


def section_html(section: Section, counter: list[int]) -> str:
    """One section: its heading and blocks."""
    parts = [f'<section id="{_esc(section.id)}"><h2>{_esc(section.title)}</h2>']
    for block in section.blocks:
        if isinstance(block, FigureSpec):
            counter[0] += 1
            parts.append(figure_html(block, f"gp-fig-{counter[0]}"))
        elif isinstance(block, TableSpec):
            parts.append(table_html(block))
        else:
            parts.append(_text(block))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report, footer: str = "") -> str:
    """The whole report as one HTML string (plotly.js inline, no external resources)."""
    counter = [0]
    sections = "\n".join(section_html(s, counter) for s in report.sections)
    toc = "".join(f'<li><a href="#{_esc(s.id)}">{_esc(s.title)}</a></li>'
                  for s in report.sections)
    subtitle = f"<p>{_esc(report.subtitle)}</p>" if report.subtitle else ""
    footer = footer or (f"Made by gradprobe; Plotly.js {plotly.__version__} (Python package) "
                        "embedded: this file opens offline.")
    loader = _LOADER.replace("CONFIG", json.dumps(PLOTLY_CONFIG))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(report.title)}</title><style>{_CSS}</style>"
        f"<script>{plotly_js()}</script></head>\n<body>"
        f"<header><h1>{_esc(report.title)}</h1>{subtitle}<nav><ul>{toc}</ul></nav></header>"
        f"<main>\n{sections}\n</main><footer>{_esc(footer)}</footer>"
        f"<script>{loader}</script></body></html>\n"
    )


def write_html(report: Report, path: Path) -> Path:
    """Write :func:`render_html` to ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
