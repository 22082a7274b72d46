"""Text from a dataset, shown as text (notebooks 00, 04, 07 and the site): the one place that turns data text (titles,
genres, user and item tokens) into display text.

A dataset is something users download from elsewhere; a title such as ``<img src=x onerror=...>`` must appear as
those characters, never as an element. ``text`` escapes for Markdown and HTML at once (``display(Markdown(...))``,
``HTML(...)``); ``style(df)`` is ``df.style`` with every text cell and label escaped (a Styler's own ``format``
does not escape once it is given a formatter, nor does it escape the index), plain DataFrames escape by default;
the site escapes what it inlines (``lib.site``).
"""
from __future__ import annotations

import html
import re

import pandas as pd

pd.set_option("styler.format.escape", "html")        # a Styler without formatters escapes its cells

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")   # characters Markdown gives a meaning; '<', '>', '&' by html


def text(s) -> str:
    """`s` (any value; str() of it) as inert text for Markdown or HTML: Markdown's punctuation backslash-escaped,
    then '<', '>', '&' and quotes as HTML entities. Whitespace runs are kept; a newline becomes a space, so a title
    cannot start a Markdown block of its own."""
    s = re.sub(r"[\r\n]+", " ", str(s))
    return html.escape(_MARKDOWN.sub(r"\\\1", s), quote=True)


def texts(items, sep: str = ", ") -> str:
    """Several data texts joined by `sep` (which is ours, not escaped)."""
    return sep.join(text(i) for i in items)


def _escaped(v):
    return html.escape(v, quote=True) if isinstance(v, str) else v


def style(df: pd.DataFrame):
    """`df.style` with every string cell, index label and column label HTML-escaped first, so whatever formats,
    captions or colours are chained after it, data text stays text. Use it for any table that holds data text."""
    out = df.map(_escaped)
    out.index = out.index.map(_escaped)
    out.columns = out.columns.map(_escaped)
    return out.style
