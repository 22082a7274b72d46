"""Intent clusters you can inspect (notebook 04, section 8): one interactive scatter per model, in the browser.

Each panel is one model's 2-D picture (t-SNE or UMAP) of the users' intent representations h_u, coloured by the
user's cluster. Hover shows the user, their cluster and their last few titles; wheel and box zoom and pan move the
picture; a box, lasso or tap selection in one panel highlights the same users in every other panel, because all
panels draw from one ColumnDataSource (row i = user i); a table below counts the genres of the selected users'
recent items, with their lift against all users (a CustomJS callback recounts it on every selection, so the page
needs no kernel); a legend entry hides its cluster.

Why bokeh: hover, zoom and linked selection in the browser without a kernel, and its JavaScript (about 2 MB with
the table widgets) can be inlined into the page (`resources=INLINE`), so the executed notebook and its page on
the offline site fetch nothing. Data text (titles, genres, user tokens) reaches the page only inside bokeh's
document JSON, which bokeh HTML-escapes when embedding and draws as text (hover fields, table cells, canvas
legends); the browser test of `tests/test_explore.py` shows a hostile title as text with no element created.

`intent_scatter` builds the layout; `notebook_output` shows it in a notebook (JupyterLab, and nbconvert's HTML
export, which keeps the inlined scripts); `standalone_html` is the self-contained page (tests, a file to share).
"""
from __future__ import annotations

import html
import re

import numpy as np

N_TITLES = 5                                           # last titles shown on hover
TOOLS = "pan,wheel_zoom,box_zoom,box_select,lasso_select,tap,reset"

# recount the genres of the selected users' recent items (all users when nothing is selected); runs in the browser
GENRE_COUNT_JS = """
const n = src.data.user.length, G = src.data.genres;
const idx = src.selected.indices.length ? src.selected.indices : Array.from({length: n}, (_, i) => i);
const tally = rows => { const c = new Map(); let total = 0;
  for (const i of rows) for (const g of G[i]) { c.set(g, (c.get(g) || 0) + 1); total++; } return [c, total]; };
const [count, total] = tally(idx), [all, all_total] = tally(Array.from({length: n}, (_, i) => i));
const rows = Array.from(count.entries()).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
table.data = {genre: rows.map(r => r[0]), items: rows.map(r => r[1]), share: rows.map(r => r[1] / total),
              lift: rows.map(r => (r[1] / total) / (all.get(r[0]) / all_total))};
grid.view.change.emit();               // the DataTable redraws only on a change of its view (the row count)
caption.text = src.selected.indices.length ? `genres of the recent items of the ${idx.length} selected users` :
               `genres of the recent items of all ${n} users (select points to count a subset)`;
"""


def _natural(v):
    s = str(v)
    return (0, int(s), "") if re.fullmatch(r"-?\d+", s) else (1, 0, s)


def _palette(n: int) -> list[str]:
    from bokeh.palettes import Category10_10, Category20_20, Turbo256
    if n <= 10:
        return list(Category10_10[:max(n, 1)])
    if n <= 20:
        return list(Category20_20[:n])
    return [Turbo256[int(i)] for i in np.linspace(0, 255, n)]


def genre_counts(genres, selected=None) -> list[tuple[str, int, float, float]]:
    """(genre, items, share, lift) rows, most items first: how often each genre occurs among the `selected` users'
    genre lists (all users when None or empty), its share of those occurrences, and lift = that share / its share
    among all users'. The page's callback (GENRE_COUNT_JS) computes the same table in the browser."""
    def tally(rows):
        c: dict[str, int] = {}
        for i in rows:
            for g in genres[i]:
                c[g] = c.get(g, 0) + 1
        return c, max(sum(c.values()), 1)
    (count, total), (every, every_total) = tally(range(len(genres)) if selected is None or len(selected) == 0
                                                 else selected), tally(range(len(genres)))
    return [(g, c, c / total, (c / total) / (every[g] / every_total))
            for g, c in sorted(count.items(), key=lambda r: (-r[1], r[0]))]


def intent_scatter(coords: dict, labels: dict, users, recent_titles: list[list[str]], genres=None, *,
                   n_titles: int = N_TITLES, label_name: str = "intent", width: int = 430, height: int = 380,
                   ncols: int = 2):
    """A bokeh layout: one scatter per entry of `coords` ({panel name: (N, 2) coordinates}, e.g. "LLMDiRec · t-SNE"
    and "ID-only · t-SNE"), coloured by `labels[panel name]` ((N,) cluster of each user in that panel).

    Row i of every array is user i: `users` (N,) their names or ids, `recent_titles` N lists of titles, oldest
    first (the last `n_titles` are shown on hover, newest first), `genres` N lists of genre names (the genres of
    their recent items, one entry per item and genre) for the linked table (`genre_counts` of the selection), or
    None for no table. One ColumnDataSource holds every panel's columns, so a selection in one panel selects the
    same users in all of them.
    """
    from bokeh.layouts import column, gridplot
    from bokeh.models import (CDSView, ColumnDataSource, CustomJS, DataTable, Div, GroupFilter, HoverTool,
                              NumberFormatter, StringFormatter, TableColumn)
    from bokeh.plotting import figure

    names = list(coords)
    if set(labels) != set(names):
        raise ValueError(f"labels must have one entry per panel of coords {names}, got {list(labels)}")
    n = len(users)
    for name in names:
        if np.shape(coords[name]) != (n, 2) or len(labels[name]) != n:
            raise ValueError(f"panel {name!r}: coords {np.shape(coords[name])} and labels ({len(labels[name])},) "
                             f"must be ({n}, 2) and ({n},), one row per user")
    if len(recent_titles) != n or (genres is not None and len(genres) != n):
        raise ValueError(f"recent_titles and genres need one entry per user ({n})")

    data = {"user": [str(u) for u in users],
            "titles": [" · ".join(str(t) for t in reversed(list(ts)[-n_titles:])) for ts in recent_titles],
            "genres": [[str(g) for g in gs] for gs in genres] if genres is not None else [[] for _ in range(n)]}
    for p, name in enumerate(names):
        xy = np.asarray(coords[name], dtype=float)                # (N, 2)
        data[f"x{p}"], data[f"y{p}"] = xy[:, 0], xy[:, 1]
        data[f"c{p}"] = [str(v) for v in labels[name]]
    src = ColumnDataSource(data, name="users")

    panels = []
    for p, name in enumerate(names):
        factors = sorted(set(data[f"c{p}"]), key=_natural)
        fig = figure(title=name, width=width, height=height, tools=TOOLS, active_scroll="wheel_zoom",
                     active_drag="box_select", name=f"panel{p}")
        # one renderer per cluster (a view of the shared source): its legend entry hides it
        rs = [fig.scatter(f"x{p}", f"y{p}", source=src, size=6,
                          view=CDSView(filter=GroupFilter(column_name=f"c{p}", group=f)), line_color=None,
                          fill_alpha=0.75, color=colour, legend_label=f,
                          nonselection_fill_alpha=0.08, selection_fill_alpha=1.0, selection_line_color="black")
              for f, colour in zip(factors, _palette(len(factors)))]
        fig.add_tools(HoverTool(renderers=rs, tooltips=[("user", "@user"), (label_name, f"@c{p}"),
                                                       (f"last {n_titles} titles", "@titles")]))
        fig.legend.title = label_name
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        fig.add_layout(fig.legend[0], "right")
        fig.xaxis.visible = fig.yaxis.visible = False        # projection axes carry no units
        panels.append(fig)
    grid = gridplot(panels, ncols=ncols, merge_tools=False)
    what = html.escape(label_name)
    head = Div(text=f"<b>{len(names)} panels, {n} users</b>: hover a point for the user, their {what} and last "
                    f"titles; drag to box-select (lasso and pan in each toolbar), the wheel zooms, a legend entry "
                    f"hides its {what}; a selection in one panel highlights the same users in the others.")
    if genres is None:
        return column(head, grid)

    rows = genre_counts(data["genres"])
    table_src = ColumnDataSource({k: [r[j] for r in rows] for j, k in enumerate(("genre", "items", "share", "lift"))},
                                 name="genre_counts")
    caption = Div(text=f"genres of the recent items of all {n} users (select points to count a subset)",
                  name="genre_caption")
    table = DataTable(source=table_src, width=480, height=260, index_position=None, reorderable=False,
                      name="genre_table",
                      columns=[TableColumn(field="genre", title="genre", formatter=StringFormatter()),
                               TableColumn(field="items", title="items", formatter=NumberFormatter(format="0")),
                               TableColumn(field="share", title="share", formatter=NumberFormatter(format="0.0%")),
                               TableColumn(field="lift", title="lift vs all users",
                                           formatter=NumberFormatter(format="0.00"))])
    recount = CustomJS(args={"src": src, "table": table_src, "grid": table, "caption": caption}, code=GENRE_COUNT_JS)
    src.selected.js_on_change("indices", recount)
    return column(head, grid, caption, table)


def standalone_html(layout, title: str = "IntentLab: intent clusters") -> str:
    """A self-contained HTML page of `layout`: bokeh's JavaScript inlined (INLINE resources), nothing fetched."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    return file_html(layout, INLINE, title)


def notebook_html(layout) -> str:
    """An HTML fragment for a notebook output: bokeh's JavaScript inlined (only the parts the layout uses: about
    1.9 MB with the table), the target element and the script that draws the document into it. JupyterLab runs the
    scripts of a trusted output (a cell run in this session); nbconvert's HTML export keeps them as they are."""
    from bokeh.embed import components
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE
    script, div = components(layout)
    return bundle_for_objs_and_resources([layout], INLINE).scripts(tag=True) + div + script


def notebook_output(layout):
    """`layout` as a notebook output (IPython.display.HTML of `notebook_html`): the last line of a cell shows it."""
    from IPython.display import HTML
    return HTML(notebook_html(layout))


def demo(dataset: str = "ml-100k", n_users: int = 400, window: int = 10, K: int = 6, seed: int = 0,
         projection: str = "t-SNE", E_text=None):
    """The view on `n_users` users of `dataset` without training anything: "text view" = the mean text embedding
    (notebook 02's e_llm, or `E_text` (n_items, d)) of each user's last `window` items; "random-ID view" = the mean
    of seeded random item vectors over the same items (an ID-only stand-in). Each is clustered into K intents
    (K-means, lib.intents) and projected to 2-D (lib.plots.project_2d). Returns the layout."""
    import torch

    from lib import data, embed, intents, plots
    ds = data.load_dataset(dataset)
    titles, item_genres = data.item_titles(ds), data.item_genres(ds)
    users = list(range(min(n_users, ds.n_users)))
    recent = [ds.sequences[u][-window:] for u in users]
    E = torch.as_tensor(embed.item_text_embeddings(ds) if E_text is None else E_text, dtype=torch.float32)
    E_id = torch.randn(ds.n_items, 32, generator=torch.Generator().manual_seed(seed))     # (n_items, 32)
    reps = {"text view": torch.stack([E[torch.tensor(r)].mean(0) for r in recent]),      # (U, d)
            "random-ID view": torch.stack([E_id[torch.tensor(r)].mean(0) for r in recent])}
    coords, labels = {}, {}
    for name, H in reps.items():
        c = torch.from_numpy(intents.fit_prototypes(H, K, seed=seed, minibatch=False))
        labels[f"{name} · {projection}"] = intents.nearest_prototype(H, c).numpy()
        coords[f"{name} · {projection}"] = plots.project_2d(H.numpy(), projection, seed=seed)
    return intent_scatter(coords, labels, [ds.user_tokens[u] for u in users],
                          [[titles[i] for i in r] for r in recent],
                          [[g for i in r for g in item_genres[i]] for r in recent])
