"""Data text is shown as text (issue 33): lib.safe for notebooks, lib.site for the pages, and a dataset whose every title
is hostile run through notebooks 00, 04 and 07 and the site, opened in headless Chromium."""
import re

import pandas as pd
import pytest

from lib import browser, safe, site

HOSTILE = ['<img src=x onerror="window.__pwned=1">', "</script><script>window.__pwned=2</script>", "<!--<script>",
           "[click](javascript:window.__pwned=3)", "*bold* _it_ `code` # heading", "&lt;b&gt;entity&lt;/b&gt;"]


@pytest.mark.parametrize("title", HOSTILE)
def test_text_escapes_html_and_markdown(title):
    out = safe.text(title)
    assert "<" not in out and ">" not in out, "no tag can open"
    assert not re.search(r"(?<!\\)[*_`\[\]()#]", out.replace("&#x27;", "").replace("&quot;", "")), \
        "Markdown's punctuation is backslash-escaped"
    import html
    assert html.unescape(out).replace("\\", "") == title.replace("\\", ""), "the reader sees the same characters"


def test_text_of_a_newline_cannot_start_a_block():
    assert "\n" not in safe.text("Title\n# heading\n<script>")


def test_style_escapes_cells_and_labels_whatever_is_chained():
    df = pd.DataFrame({"title": [HOSTILE[0]], "n": [1.23456]}, index=[HOSTILE[2]])
    html_ = safe.style(df).format({"n": "{:.2f}"}).set_caption("caption").to_html()
    assert "<img" not in html_ and "<!--<script>" not in html_ and "&lt;img" in html_ and "1.23" in html_


def test_links_between_notebooks_point_at_their_pages():
    lesson = '<a href="evidence/04_intent_clusters.ipynb">e</a> <a href="03_diffusion_trajectories.ipynb#2.-x">l</a>'
    assert site.notebook_links(lesson, "04_intent_clusters") == (
        '<a href="evidence-04_intent_clusters.html">e</a> <a href="03_diffusion_trajectories.html#2.-x">l</a>')
    ev = '<a href="../04_intent_clusters.ipynb">l</a> <a href="02_dual_view_fusion.ipynb">e</a>'
    assert site.notebook_links(ev, "evidence/04_intent_clusters") == (
        '<a href="04_intent_clusters.html">l</a> <a href="evidence-02_dual_view_fusion.html">e</a>')


def test_site_inline_json_and_links_cannot_break_out():
    js = site.inline_json([{"title": HOSTILE[1] + HOSTILE[2] + "&"}])
    assert "<" not in js and ">" not in js and "&" not in js
    import json
    assert json.loads(js)[0]["title"] == HOSTILE[1] + HOSTILE[2] + "&"
    assert site.href('x" onclick="alert(1)') == "x%22%20onclick%3D%22alert%281%29.html"
    assert site.page_name("evidence/05_adarec_adaptive_depth") == "evidence-05_adarec_adaptive_depth"


# --------------------------------------------------------------------------- the whole path, in a browser
@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    """ML-100K's first 200 users and 500 items (so that the three runs stay short: every title is embedded and put in
    prompts afresh), every title prefixed by a hostile string (one of HOSTILE, in turn), run through lessons 00, 04
    and 07 (smoke sizes: the data tour, the interactive intent clusters, a user's history and top 10) into a folder,
    and that folder's site."""
    from lib import data, run
    src = data.recbole_example_dir()
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "ml-hostile"
    folder.mkdir()
    n_users, n_items = 200, 500

    def keep(suffix, ok):       # the header and the rows whose first fields pass ok (ids as in ML-100K: 1, 2, ...)
        lines = (src / f"ml-100k.{suffix}").read_text().splitlines()
        return [lines[0]] + [ln for ln in lines[1:] if ok(ln.split("\t"))]
    inter = keep("inter", lambda f: int(f[0]) <= n_users and int(f[1]) <= n_items)
    (folder / "ml-hostile.inter").write_text("\n".join(inter) + "\n")
    (folder / "ml-hostile.user").write_text("\n".join(keep("user", lambda f: int(f[0]) <= n_users)) + "\n")
    lines = keep("item", lambda f: int(f[0]) <= n_items)
    rows = [lines[0]]
    for k, line in enumerate(lines[1:]):
        f = line.split("\t")
        f[1] = f"{HOSTILE[k % len(HOSTILE)]} {f[1]}"
        rows.append("\t".join(f))
    (folder / "ml-hostile.item").write_text("\n".join(rows) + "\n")
    runs = root / "runs"
    stems = [run.stem_of(p) for p in run.lessons() if p.name[:2] in ("00", "04", "07")]   # where titles are shown
    for stem in stems:
        run.run([stem], {"smoke": True, "dataset": str(folder)}, output_dir=str(runs), execution_timeout=600)
    site.build(runs, root / "site")
    return root / "site", stems


@pytest.mark.notebook
def test_hostile_titles_stay_text_in_notebooks_and_site(hostile_site):
    if browser.chromium_path() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; make test installs it as root)")
    out, stems = hostile_site
    pages = [out / f"{site.page_name(s)}.html" for s in stems] + [out / "index.html"]
    with browser.browser() as b:
        page = b.new_page()
        for f in pages:
            page.goto(f.as_uri(), wait_until="load")
            page.wait_for_timeout(300)
            assert page.evaluate("window.__pwned === undefined"), f"{f.name}: a title ran as script"
            assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0, f"{f.name}: <img> from a title"
            text = page.evaluate("document.body.innerText")
            if f.name != "index.html":
                assert "Summary" in text and "Exercises" in text, f"{f.name}: the page is cut short (blanked)"
                assert "onerror" in text or "__pwned" in text, f"{f.name}: the hostile titles are not shown as text"
