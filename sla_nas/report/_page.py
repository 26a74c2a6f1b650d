"""The report page: ``templates/report.html.j2`` (package data, autoescaped HTML) rendered with
the data of each section and the figures as plotly JSON text (no plotting here)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, NamedTuple

import jinja2
from markupsafe import Markup

from ._data import TableInfo

__all__ = ["render_page", "sortable", "SortableTable", "fmt"]


def fmt(value: float | None, digits: int = 4) -> str:
    """A number as the page shows it: integers and large values with thousands separators,
    small ones with ``digits`` decimals; nothing for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return ""
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _script_json(text: str) -> Markup:
    """Figure JSON for a <script type='application/json'> block: every "<" escaped (JSON
    reads it back), so no label can end or confuse the element; not HTML-escaped, since a
    script's text is not entity-decoded."""
    return Markup(text.replace("<", "\\u003c"))


class SortableTable(NamedTuple):
    """A `TableInfo` ready for the page: which columns sort as numbers, and each cell's sort
    key and text."""

    head: tuple[tuple[str, bool], ...]  # (column, numeric)
    rows: tuple[tuple[tuple[Any, str], ...], ...]  # (sort key, text) per cell


def sortable(info: TableInfo) -> SortableTable:
    """Numeric columns (every value a number) sort as numbers and show as `fmt` does; a
    boolean column shows a star."""
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                   for r in info.rows if r[i] is not None) for i in range(len(info.columns))]
    return SortableTable(tuple(zip(info.columns, numeric)),
                         tuple(tuple(_cell(v, n) for v, n in zip(row, numeric))
                               for row in info.rows))


def _cell(value: Any, numeric: bool) -> tuple[Any, str]:
    if isinstance(value, bool):
        return int(value), "★" if value else ""
    key = "" if value is None else value
    return key, fmt(value) if numeric else str(key)


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("sla_nas.report", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(fmt=fmt, script_json=_script_json)


def render_page(**context: Any) -> str:
    """The whole page; ``context`` holds what ``report.html.j2`` reads (`build_report` says
    what that is), plus the time it was written."""
    written = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    return _ENV.get_template("report.html.j2").render(written=written, **context)
