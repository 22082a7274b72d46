"""lib.explore: the interactive intent scatter. The layout (panels, hover fields, one shared source, the genre
table's callback), hostile data text kept as text, and the standalone page in headless Chromium from file://: no
request leaves the machine, the plot draws, hover shows a hostile title as text, a box selection in one panel
selects the same users in the other and recounts the genre table."""
import re

import nbformat
import numpy as np
import pytest

from lib import browser, explore

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_GENRE = "<img src=y onerror=alert(2)>"
N = 40


@pytest.fixture(scope="module")
def view_data():
    rng = np.random.default_rng(0)
    coords = {"LLMDiRec · t-SNE": rng.normal(size=(N, 2)), "ID-only · t-SNE": rng.normal(size=(N, 2))}
    labels = {"LLMDiRec · t-SNE": rng.integers(0, 4, N), "ID-only · t-SNE": rng.integers(0, 3, N)}
    titles = [[f"Movie {u}.{j}" for j in range(8)] for u in range(N)]
    titles[0][-1] = HOSTILE                                          # user 0's newest title
    genres = [["Drama", "Comedy"] if u % 2 else ["Action", HOSTILE_GENRE] for u in range(N)]
    return coords, labels, [f"user{u}" for u in range(N)], titles, genres


@pytest.fixture(scope="module")
def layout(view_data):
    return explore.intent_scatter(*view_data)


def models(layout, kind):
    import bokeh.models
    return list(layout.select({"type": getattr(bokeh.models, kind)}))


def test_one_panel_per_model_with_hover_fields(layout, view_data):
    figs = sorted(models(layout, "Plot"), key=lambda f: f.name)
    assert [f.title.text for f in figs] == list(view_data[0])
    for f in figs:
        hover = [t for t in f.tools if type(t).__name__ == "HoverTool"]
        assert len(hover) == 1
        fields = dict(hover[0].tooltips)
        assert fields["user"] == "@user" and fields["last 5 titles"] == "@titles" and fields["intent"].startswith("@c")
        assert {"PanTool", "WheelZoomTool", "BoxSelectTool", "LassoSelectTool"} <= {type(t).__name__ for t in f.tools}
    legends = [[it.label["value"] for it in f.legend[0].items] for f in figs]
    assert legends == [["0", "1", "2", "3"], ["0", "1", "2"]]              # one entry per cluster, in order


def test_panels_share_one_source_and_the_table_follows_the_selection(layout):
    renderers = models(layout, "GlyphRenderer")
    sources = {id(r.data_source) for r in renderers}
    assert len(renderers) == 4 + 3 and len(sources) == 1                # a selection is the same rows in every panel
    src = renderers[0].data_source
    callbacks = src.selected.js_property_callbacks["change:indices"]
    assert callbacks and "genre" in callbacks[0].code
    table = models(layout, "DataTable")[0]
    assert [c.field for c in table.columns] == ["genre", "items", "share", "lift"]
    assert callbacks[0].args["table"] is table.source


def test_titles_newest_first_and_genre_counts(view_data):
    coords, labels, users, titles, genres = view_data
    lay = explore.intent_scatter(coords, labels, users, titles, genres, n_titles=3)
    src = models(lay, "GlyphRenderer")[0].data_source
    assert src.data["titles"][1] == "Movie 1.7 · Movie 1.6 · Movie 1.5"
    G = [["A", "A", "B"], ["B"], ["C"]]                               # the genres of each user's recent items
    assert explore.genre_counts(G) == [("A", 2, 0.4, 1.0), ("B", 2, 0.4, 1.0), ("C", 1, 0.2, 1.0)]
    assert explore.genre_counts(G, selected=[0, 2]) == [("A", 2, 0.5, 1.25), ("B", 1, 0.25, 0.625),
                                                        ("C", 1, 0.25, 1.25)]
    assert len(models(explore.intent_scatter(coords, labels, users, titles), "DataTable")) == 0


def test_demo_on_ml100k_users():
    """demo(): ML-100K users, two views clustered and projected (random item vectors stand in for the text
    embeddings here, so the test needs no embedding model); hover titles come from the dataset."""
    import torch

    from lib import data
    ds = data.load_dataset("ml-100k")
    E_text = torch.randn(ds.n_items, 16, generator=torch.Generator().manual_seed(0))      # (n_items, 16)
    lay = explore.demo(n_users=60, K=3, projection="PCA", E_text=E_text)
    figs = models(lay, "Plot")
    assert sorted(f.title.text for f in figs) == ["random-ID view · PCA", "text view · PCA"]
    src = models(lay, "GlyphRenderer")[0].data_source
    assert len(src.data["user"]) == 60 and src.data["user"][0] == str(ds.user_tokens[0])
    newest = data.item_titles(ds)[ds.sequences[0][-1]]
    assert src.data["titles"][0].startswith(newest) and len(models(lay, "DataTable")) == 1


def test_mismatched_inputs_are_refused(view_data):
    coords, labels, users, titles, genres = view_data
    with pytest.raises(ValueError, match="one entry per panel"):
        explore.intent_scatter(coords, {"LLMDiRec · t-SNE": labels["LLMDiRec · t-SNE"]}, users, titles)
    with pytest.raises(ValueError, match="one row per user"):
        explore.intent_scatter(coords, labels, users[:-1], titles[:-1])


def test_pages_are_self_contained_and_carry_data_text_escaped(layout):
    page, fragment = explore.standalone_html(layout), explore.notebook_html(layout)
    for html in (page, fragment):
        assert HOSTILE not in html and HOSTILE_GENRE not in html                # only bokeh's escaped JSON
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=", html)
        assert "BEGIN bokeh.min.js" in html and "BEGIN bokeh-tables.min.js" in html    # the library, inlined
    assert "BEGIN bokeh-gl" not in fragment and "BEGIN bokeh-mathjax" not in fragment   # only what the view uses


# ---------------------------------------------------------------------------------------------- in Chromium
# every <img> and the text of every element matching a selector, bokeh's shadow roots included
ALL_IMGS = """() => { const out = []; const walk = root => root.querySelectorAll('*').forEach(e => {
  if (e.tagName === 'IMG') out.push(e.outerHTML); if (e.shadowRoot) walk(e.shadowRoot); });
  walk(document); return out; }"""
ALL_TEXT = """sel => { const out = []; const walk = root => root.querySelectorAll('*').forEach(e => {
  if (e.matches(sel)) out.push(e.textContent); if (e.shadowRoot) walk(e.shadowRoot); });
  walk(document); return out; }"""
POINT = """([name, i]) => { const pv = [...Bokeh.index.all_views()].find(v => v.model.name === name);
  const src = Bokeh.documents[0].get_model_by_name('users'); const p = name.slice(5);
  const r = pv.el.getBoundingClientRect();
  return [r.left + pv.frame.x_scale.compute(src.data['x' + p][i]),
          r.top + pv.frame.y_scale.compute(src.data['y' + p][i])]; }"""
FRAME = """name => { const pv = [...Bokeh.index.all_views()].find(v => v.model.name === name);
  const r = pv.el.getBoundingClientRect(), f = pv.frame.bbox;
  return [r.left + f.left, r.top + f.top, f.width, f.height]; }"""


@pytest.fixture(scope="module")
def chromium():
    if browser.chromium_path() is None:
        pytest.skip("Chromium is not installed: `make browser` (Debian/Ubuntu, as root: apt-get install chromium) "
                    "runs the browser tests")
    with browser.browser() as b:
        yield b


def open_page(chromium, path):
    """Open `path` from file:// and wait until bokeh has drawn; returns (page, requests off the machine, problems)."""
    page = chromium.new_page(viewport={"width": 1300, "height": 1000})
    outside, problems = [], []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.route(re.compile(r"^https?://"), lambda route: route.abort())        # recorded above, then refused at once
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text} ({(m.location or {}).get('url')})")
            if m.type == "error" else None)
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function("() => window.Bokeh && Bokeh.index && [...Bokeh.index.all_views()].some("
                           "v => v.model.name === 'panel1')", timeout=30_000)
    page.wait_for_timeout(300)
    return page, outside, problems


def hover_and_select(page, view_data):
    """Hover user 0 in panel 0, box-select part of panel 1; returns (tooltip texts, selected rows, table cells,
    caption)."""
    x, y = page.evaluate(POINT, ["panel0", 0])
    page.mouse.move(x - 15, y - 15)
    page.mouse.move(x, y, steps=4)
    page.wait_for_timeout(400)
    tips = [t.strip() for t in page.evaluate(ALL_TEXT, ".bk-tooltip-row-value")]
    left, top, w, h = page.evaluate(FRAME, "panel1")
    page.mouse.move(left + 2, top + 2)
    page.mouse.down()
    page.mouse.move(left + w * 0.6, top + h * 0.6, steps=6)
    page.mouse.up()
    page.wait_for_timeout(400)
    selected = page.evaluate("Bokeh.documents[0].get_model_by_name('users').selected.indices")
    cells = page.evaluate(ALL_TEXT, ".slick-cell")
    caption = page.evaluate("Bokeh.documents[0].get_model_by_name('genre_caption').text")
    return tips, sorted(selected), cells, caption


def check_view(page, view_data):
    tips, selected, cells, caption = hover_and_select(page, view_data)
    assert page.locator("canvas").count() >= 2                     # the panels are drawn (inside bokeh's shadow DOM)
    assert any(t.startswith(HOSTILE) for t in tips), f"hover shows the hostile title as text: {tips}"
    assert "user0" in tips
    assert page.evaluate(ALL_IMGS) == [], "an element was created from data text"
    assert selected, "the box selection in panel 1 selected no user"
    rows = explore.genre_counts(view_data[4], selected)             # the table recounted for the selection
    assert (cells[0::4], cells[1::4]) == ([r[0] for r in rows], [str(r[1]) for r in rows])
    assert np.allclose([float(c) for c in cells[3::4]], [r[3] for r in rows], atol=0.006)     # lift, two decimals
    assert caption == f"genres of the recent items of the {len(selected)} selected users"
    # the other panel shows the same rows selected: its renderers draw from the one source
    assert page.evaluate("""() => { const pv = [...Bokeh.index.all_views()].find(v => v.model.name === 'panel0');
                  return pv.model.renderers.every(r => r.data_source.selected.indices.length > 0); }""")


def test_standalone_page_in_chromium(chromium, layout, view_data, tmp_path):
    path = tmp_path / "explore.html"
    path.write_text(explore.standalone_html(layout))
    page, outside, problems = open_page(chromium, path)
    check_view(page, view_data)
    assert not outside, f"requests that leave the machine: {outside[:5]}"
    assert not problems, problems


def nbconvert_page(layout, tmp_path):
    """The view as a notebook output (display_data text/html of notebook_html), exported by nbconvert's lab
    template as `make site` exports a page: no kernel needed."""
    from nbconvert import HTMLExporter

    from lib import site
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("explore.notebook_output(view)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": explore.notebook_html(layout)})]
    nb.cells = [nbformat.v4.new_markdown_cell("# The view"), cell]
    body, _ = HTMLExporter(template_name="lab", mathjax_url=site.MATHJAX_URL).from_notebook_node(nb)
    return body


def test_notebook_output_in_an_exported_page(chromium, layout, view_data, tmp_path):
    """The notebook output, exported by nbconvert, draws and works without a kernel. (nbconvert's own require.js
    from cdnjs is blocked here: `lib.site.offline` removes it from the site's pages.)"""
    path = tmp_path / "exported.html"
    path.write_text(nbconvert_page(layout, tmp_path))
    page, outside, problems = open_page(chromium, path)
    check_view(page, view_data)
    assert all("require" in u for u in outside), outside              # nothing of the view's own
    assert not [p for p in problems if "require" not in p and "ERR_" not in p], problems


def test_site_offline_keeps_the_inlined_bundle(chromium, layout, view_data, tmp_path):
    """`lib.site.offline` (what `make site` does to every page) keeps bokeh's inlined bundle, which names
    cdn.jsdelivr.net for MathJax and icon fonts it fetches only for TeX labels and icon widgets, and drops
    nbconvert's require.js; the page still works and fetches nothing."""
    from lib import site
    body = nbconvert_page(layout, tmp_path)
    page_html = site.offline(body)
    assert "BEGIN bokeh.min.js" in page_html and "require.min.js" not in page_html
    path = tmp_path / "site_page.html"
    path.write_text(page_html)
    page, outside, problems = open_page(chromium, path)
    check_view(page, view_data)
    assert not outside, outside
    assert not [p for p in problems if "/mathjax/" not in p], problems      # the site copies MathJax in; not here


# ---------------------------------------------------------------------------------------------- in JupyterLab
LAB_CELL = '''import numpy as np
from lib import explore
rng = np.random.default_rng(0)
coords = {"LLMDiRec · t-SNE": rng.normal(size=(30, 2)), "ID-only · t-SNE": rng.normal(size=(30, 2))}
titles = [[f"Movie {u}"] for u in range(30)]
titles[0] = [%r]
view = explore.intent_scatter(coords, {k: rng.integers(0, 3, 30) for k in coords}, [f"user{u}" for u in range(30)],
                              titles, [["Drama"]] * 30)
explore.notebook_output(view)''' % HOSTILE


@pytest.mark.notebook
def test_notebook_output_in_jupyterlab(chromium, tmp_path):
    """JupyterLab runs a cell that shows the view: it draws, and hover shows the hostile title as text."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    import uuid

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LAB_CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, tmp_path / "view.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.open_browser=False", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        page = chromium.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{url}/lab/tree/view.ipynb?token={token}", timeout=60_000)
        page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=60_000)             # the kernel is up
        for attempt in range(2):                                # a click before the session is wired can be lost
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            try:
                page.wait_for_selector(".jp-InputArea-prompt:has-text('[1]')", timeout=60_000)
                break
            except Exception:
                if attempt:
                    raise
        page.wait_for_function("() => window.Bokeh && Bokeh.index && [...Bokeh.index.all_views()].some("
                               "v => v.model.name === 'panel1')", timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator(".jp-OutputArea-output canvas").count() >= 2
        x, y = page.evaluate(POINT, ["panel0", 0])
        page.mouse.move(x - 15, y - 15)
        page.mouse.move(x, y, steps=4)
        page.wait_for_timeout(400)
        tips = [t.strip() for t in page.evaluate(ALL_TEXT, ".bk-tooltip-row-value")]
        assert HOSTILE in tips and "user0" in tips, tips
        assert page.evaluate(ALL_IMGS) == []
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
