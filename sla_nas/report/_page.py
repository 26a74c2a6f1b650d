"""The report page's HTML parts: the sortable table, the scripts, the style and the page that
collects sections and figure JSON (no plotting here: figures arrive as plotly JSON text)."""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Any

from ._data import SummaryInfo, TableInfo
from ._noise import ConfirmInfo, NoiseInfo

__all__ = ["Page", "table_html", "header_html", "fmt", "SORT_JS", "DRAW_JS", "CSS"]


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return ""
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table_html(info: TableInfo) -> str:
    """An HTML table whose header cells sort it (`SORT_JS`): numeric columns as numbers."""
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                   for r in info.rows if r[i] is not None) for i in range(len(info.columns))]
    head = "".join(f"<th data-num='{int(n)}' title='click to sort'>{html.escape(c)}</th>"
                   for c, n in zip(info.columns, numeric))
    body = "".join("<tr>" + "".join(_cell(v, n) for v, n in zip(row, numeric)) + "</tr>"
                   for row in info.rows)
    return (f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def _cell(value: Any, numeric: bool) -> str:
    if isinstance(value, bool):
        key, text = int(value), "★" if value else ""
    else:
        key = "" if value is None else value
        text = fmt(value) if numeric else str(key)
    return f"<td data-sort='{html.escape(str(key))}'>{html.escape(text)}</td>"


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.onclick = () => {
  const body = th.closest('table').tBodies[0], asc = th.dataset.order !== 'asc';
  th.parentNode.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = asc ? 'asc' : 'desc';
  const cmp = (x, y) => (x === '' || y === '') ? (x === '') - (y === '') :
    (asc ? 1 : -1) * (th.dataset.num === '1' ? x - y : x.localeCompare(y));
  Array.from(body.rows).sort((a, b) => cmp(a.cells[col].dataset.sort,
    b.cells[col].dataset.sort)).forEach(r => body.appendChild(r));
});
"""
DRAW_JS = """
document.querySelectorAll('div.figure').forEach(div => {
  const fig = JSON.parse(document.getElementById(div.id + '-data').textContent);
  Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
});
"""
CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px 40px;
color:#222} h1{margin:24px 0 4px;font-size:1.6em}
h2{margin:34px 0 4px;border-bottom:1px solid #ddd} nav a{margin-right:12px}
.verdict{font-size:1.15em;background:#f4f7fb;border-left:4px solid #1f4e8c;padding:10px 14px}
.read{color:#555;margin:4px 0 8px;max-width:110ch} .note{color:#8a5a00;font-style:italic}
.meta span{margin-right:14px;color:#444} .counts span{display:inline-block;margin:2px 6px 2px 0;
padding:1px 8px;border-radius:10px;color:#fff;font-size:.9em}
.scroll{overflow-x:auto} .pair{display:flex;gap:16px;flex-wrap:wrap}
.pair>div{flex:1 1 560px;min-width:0}
table.sortable{border-collapse:collapse;font-size:.88em}
table.sortable th{cursor:pointer;background:#f0f0f0}
table.sortable th[data-order=asc]::after{content:' ▲'}
table.sortable th[data-order=desc]::after{content:' ▼'}
table.sortable td,table.sortable th{padding:4px 8px;border-bottom:1px solid #e4e4e4;
text-align:right;white-space:nowrap}
"""


# ---------------------------------------------------------------------- the page
class Page:
    """The sections as HTML and the figures as JSON, in page order."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.nav: list[str] = []
        self.figures: list[str] = []

    def section(self, anchor: str, title: str, read: str, *parts: str) -> None:
        """``read`` says how to read the section; several parts sit side by side."""
        body = parts[0] if len(parts) == 1 else (
            "<div class='pair'>" + "".join(f"<div>{p}</div>" for p in parts) + "</div>")
        self.sections.append(f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"
                             f"<p class='read'>{read}</p>{body}</section>")
        self.nav.append(f"<a href='#{anchor}'>{html.escape(title)}</a>")

    def figure(self, fig: Any, note: str) -> str:
        """The figure's placeholder div, or ``note`` when there is nothing to draw."""
        if fig is None:
            return f"<p class='note'>{html.escape(note)}</p>"
        self.figures.append(fig.to_json())
        return f"<div id='fig-{len(self.figures) - 1}' class='figure'></div>"

    def scripts(self) -> str:
        """The figures' JSON in data blocks; every "<" escaped (JSON reads it back), so no
        label can end or confuse the <script> element."""
        return "".join(f"<script type='application/json' id='fig-{i}-data'>{_lt(spec)}</script>"
                       for i, spec in enumerate(self.figures))


def _lt(text: str) -> str:
    return text.replace("<", "\\u003c")


def header_html(info: SummaryInfo, nav: list[str], confirm: ConfirmInfo | None,
                noise: NoiseInfo, colors: dict[str, str]) -> str:
    """Title, run facts, trials per status, the sentence that matters and the navigation."""
    objectives = ", ".join(f"{m} ({mode})" for m, mode in info.objectives)
    counts = "".join(f"<span style='background:{colors.get(s, '#9467bd')}'>"
                     f"{html.escape(s)} {n}</span>" for s, n in info.counts.items())
    meta = [f"space <b>{html.escape(info.space)}</b>", f"objectives <b>{objectives}</b>",
            f"{info.n_trials} trials", *([f"started {html.escape(info.started)}"]
                                         if info.started else []),
            f"report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"]
    text = confirm.sentence if confirm is not None else info.verdict
    sentence = text[:1].upper() + text[1:]
    source = (f"Confirmed: {len(confirm.rows)} architectures re-trained with {len(confirm.seeds)}"
              f" fresh paired seeds at {confirm.tokens:,} tokens. In the search itself: "
              f"{info.verdict}." if confirm is not None else
              "Not confirmed yet: sla-nas confirm re-trains the winners on fresh paired seeds.")
    return (f"<h1>sla-nas report: {html.escape(info.run)}</h1>"
            f"<p class='meta'>{''.join(f'<span>{m}</span>' for m in meta)}</p>"
            f"<p class='counts'>{counts}</p><p class='verdict'>{html.escape(sentence)}.</p>"
            f"<p class='read'>{html.escape(source)} {html.escape(noise.text)}</p>"
            f"<nav>{' '.join(nav)}</nav>")
