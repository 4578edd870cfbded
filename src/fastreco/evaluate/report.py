"""A self-contained HTML report: headings, text, tables and figures in one file.

Figures are embedded as base64 PNG ``<img src="data:image/png;base64,...">`` and the style sheet
is inline, so the file reads offline, can be mailed or attached to a merge request, and needs no
JavaScript. Typical use::

    report = Report("γ vs π⁰ baseline")
    report.add_section("ROC")
    report.add_figure(fig, "ROC curves of the test sample")
    report.add_table(df, "Background rejection", float_format="{:.3g}")
    report.add_text("The BDT uses **13** shower-shape variables.")
    report.write("runs/x/report.html")

``add_text`` takes a small Markdown subset (paragraphs, ``#`` headings, ``-`` lists, ``**bold**``,
``*italic*``, ```code```, ``[text](url)``); text starting with ``<`` is taken as raw HTML.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fastreco import __version__

log = logging.getLogger(__name__)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .1em; margin-top: 1.8em; }
table.fr { border-collapse: collapse; margin: .6em 0; font-size: 0.9em; }
table.fr th, table.fr td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
table.fr th { background: #f0f0f0; }
table.fr tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, caption { font-size: 0.9em; color: #555; text-align: left; padding: .3em 0; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
nav { background: #f7f7f7; padding: .5em 1em; border: 1px solid #e5e5e5; }
footer { margin-top: 3em; font-size: 0.8em; color: #777; }
""".strip()


def format_number(value: Any, digits: int = 4) -> str:
    """Readable text for a table cell: NaN -> "–", inf -> "∞", else ``digits`` significant."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if np.isnan(v):
            return "–"
        if np.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.{digits}g}"
    return str(value)


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


_BULLET = re.compile(r"^\s*[-*]\s+")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def markdown_to_html(text: str) -> str:
    """The Markdown subset of :meth:`Report.add_text` as HTML (input is escaped first)."""
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.rstrip() for ln in block.strip().splitlines()]
        if not lines:
            continue
        heading = re.match(r"^(#{1,4})\s+(.*)$", lines[0])
        if heading and len(lines) == 1:
            level = len(heading.group(1)) + 1  # "#" is a section inside the report's <h1>
            blocks.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif all(_BULLET.match(ln) for ln in lines):
            texts = [_inline(_BULLET.sub("", ln)) for ln in lines]
            items = "".join(f"<li>{t}</li>" for t in texts)
            blocks.append(f"<ul>{items}</ul>")
        else:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(blocks)


def figure_to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (``bbox_inches="tight"``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _close(fig: Figure) -> None:
    """Release a pyplot-managed figure (a bare ``Figure`` needs nothing)."""
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        if plt.fignum_exists(getattr(fig, "number", -1)):
            plt.close(fig)


class Report:
    """A builder of one self-contained HTML page.

    Blocks are appended in order; ``add_section`` starts a new ``<h2>`` (listed in the
    table of contents). Every ``add_*`` returns ``self`` so calls can be chained.

    Args:
        title: the page title and ``<h1>``.
        subtitle: an optional line under the title.
    """

    def __init__(self, title: str, *, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self._blocks: list[str] = []
        self._sections: list[tuple[str, str]] = []  # (anchor, heading)
        self._n_figures = 0
        self._n_tables = 0

    # --- content -------------------------------------------------------------------------------
    def add_section(self, heading: str) -> Report:
        """Start a section (``<h2>`` with an anchor listed in the table of contents)."""
        anchor = f"s{len(self._sections) + 1}-" + re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip(
            "-"
        )
        self._sections.append((anchor, heading))
        self._blocks.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>')
        return self

    def add_text(self, text: str, *, raw_html: bool | None = None) -> Report:
        """A paragraph (or several) of Markdown-subset text; raw HTML if it starts with ``<``
        (or ``raw_html=True``)."""
        is_html = text.lstrip().startswith("<") if raw_html is None else raw_html
        self._blocks.append(text if is_html else markdown_to_html(text))
        return self

    def add_table(
        self,
        df: pd.DataFrame,
        caption: str | None = None,
        *,
        float_format: str | Callable[[float], str] | None = None,
        formatters: Mapping[str, Callable[[Any], str]] | None = None,
        index: bool = False,
    ) -> Report:
        """A table from a DataFrame; cells are HTML-escaped.

        Args:
            float_format: format of float cells, e.g. ``"{:.3g}"`` or a callable; the default
                is :func:`format_number` (4 significant digits, NaN as "–", inf as "∞").
            formatters: per-column callables, taking precedence over ``float_format``.
            index: whether to show the index.
        """
        if float_format is None:
            fmt: Callable[[Any], str] = format_number
        elif isinstance(float_format, str):
            spec = float_format

            def fmt(v: Any) -> str:
                if isinstance(v, (float, np.floating)) and not np.isfinite(v):
                    return format_number(v)
                return spec.format(v) if isinstance(v, (float, np.floating)) else format_number(v)
        else:
            user = float_format

            def fmt(v: Any) -> str:
                return user(float(v)) if isinstance(v, (float, np.floating)) else format_number(v)

        formatters = dict(formatters or {})
        cols = [str(c) for c in df.columns]
        head = "".join(
            f"<th>{html.escape(c)}</th>"
            for c in ([str(df.index.name or "")] if index else []) + cols
        )
        body = []
        for idx, row in zip(df.index, df.itertuples(index=False, name=None), strict=True):
            cells = [f"<th>{html.escape(format_number(idx))}</th>"] if index else []
            for col, value in zip(cols, row, strict=True):
                f = formatters.get(col, fmt)
                cells.append(f"<td>{html.escape(f(value))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self._n_tables += 1
        cap = (
            f"<caption>Table {self._n_tables}. {html.escape(caption)}</caption>" if caption else ""
        )
        self._blocks.append(
            f'<table class="fr">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
        return self

    def add_figure(
        self,
        fig: Figure | bytes | str | os.PathLike[str],
        caption: str | None = None,
        *,
        dpi: int = 100,
        close: bool = True,
        width: str | None = None,
    ) -> Report:
        """A figure embedded as a base64 PNG.

        Args:
            fig: a matplotlib Figure, PNG bytes, or the path of a PNG file.
            caption: text under the figure.
            dpi: resolution of a rendered Figure.
            close: release a pyplot-managed Figure after rendering.
            width: optional CSS width (e.g. ``"60%"``).
        """
        if isinstance(fig, Figure):
            png = figure_to_png(fig, dpi=dpi)
            if close:
                _close(fig)
        elif isinstance(fig, bytes):
            png = fig
        else:
            png = Path(fig).read_bytes()
        if not png.startswith(b"\x89PNG"):
            raise ValueError("add_figure takes a Figure or PNG data")
        self._n_figures += 1
        data = base64.b64encode(png).decode("ascii")
        alt = html.escape(caption or f"figure {self._n_figures}", quote=True)
        style = f' style="width:{html.escape(width, quote=True)}"' if width else ""
        cap = (
            f"<figcaption>Figure {self._n_figures}. {html.escape(caption)}</figcaption>"
            if caption
            else ""
        )
        self._blocks.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"{style}>{cap}</figure>'
        )
        return self

    # --- output --------------------------------------------------------------------------------
    def render(self) -> str:
        """The whole page as a string."""
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        nav = ""
        if len(self._sections) > 1:
            items = "".join(
                f'<li><a href="#{a}">{html.escape(h)}</a></li>' for a, h in self._sections
            )
            nav = f"<nav><strong>Contents</strong><ol>{items}</ol></nav>"
        sub = f"<p><em>{html.escape(self.subtitle)}</em></p>" if self.subtitle else ""
        body = "\n".join(self._blocks)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
            f"<body>\n<h1>{html.escape(self.title)}</h1>\n{sub}\n{nav}\n{body}\n"
            f"<footer>Generated by fastreco {html.escape(__version__)} on {created}. "
            "Simulated data; not an official result of any experiment.</footer>\n"
            "</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page to ``path`` atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self.render(), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        log.info("wrote report %s (%d figures, %d tables)", path, self._n_figures, self._n_tables)
        return path
