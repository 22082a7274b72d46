"""`make site` (`python -m lib.site`): the executed notebooks of `runs/` as a static HTML site for readers without
a kernel: an index with the course (the lessons, in order) and the evidence (each paper's claims, decided), every
notebook's headline numbers, one page per notebook (figures inline, navigation between them, a lesson linked to its
evidence page and back), and each widget's static twin (a slider driven by the page itself) as the notebooks draw it.
A notebook whose last run failed (lib.run leaves `<stem>.failed.ipynb`) gets no page from that partial copy: the
index says it failed, and an earlier complete run's page, if there is one, carries a warning.

Pages are nbconvert's HTML export; the index and the navigation bars are written here. The site is self-contained
and works offline: MathJax 2.7 is copied in from the PyPI package `jupyter-server-mathjax` (which ships it with its
fonts) and wired through nbconvert's `mathjax_url`, so formulas render from `file://`; nbconvert's other scripts from
CDNs (require.js, mermaid, the widget loader) are left out, and interactive widgets appear as their static twins.
Every page has a search box over all pages' headings, markdown and table cells (an index inlined in the page: no
server needed) and a line of provenance (commit, date, changed parameters, machine, versions) from its results file.
"""
from __future__ import annotations

import argparse
import html
import importlib.util
import json
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

from lib import leaderboard, results, utils
from lib.utils import repo_path

CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
       "th{background:#f3f3f3}code{background:#f6f6f6;padding:0 3px}")
NAV_STYLE = ("position:sticky;top:0;z-index:100;background:#263238;color:#fff;padding:6px 12px;"
             "font-family:system-ui,sans-serif;font-size:14px")


_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"     # relative: works from file://
# the package ships MathJax's STIX-Web fonts only (not its TeX fonts): the output uses them, no image fonts
MATHJAX_FONTS = '"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}, '


def mathjax_dir() -> Path:
    """MathJax 2.7's folder inside the installed `jupyter-server-mathjax` package, found without importing it."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        raise SystemExit("MathJax for the offline site comes from the package jupyter-server-mathjax: `make install`")
    return Path(spec.origin).parent / "static"


_HEADING = re.compile(r"<h([1-6])\b[^>]*\bid=\"([^\"]+)\"[^>]*>(.*?)</h\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    no_code = re.sub(r"<(script|style)\b.*?</\1>", " ", fragment, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub(" ", no_code))).replace("¶", "").strip()


def search_entries(stem: str, title: str, page: str, limit: int = 4000) -> list[dict]:
    """One entry per section of an exported page: {page, title, anchor, heading, text}, the text being everything
    between this heading and the next (markdown, table cells, printed output), tags stripped, cut at `limit`."""
    body = page[page.find("<body"):]
    marks = list(_HEADING.finditer(body))
    out = []
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(body)
        out.append({"page": stem, "title": title, "anchor": html.unescape(m.group(2)),
                    "heading": _text(m.group(3)), "text": _text(body[m.end():end])[:limit]})
    return out


SEARCH_JS = """
(function(){const I=window.INTENTLAB_INDEX||[];const box=document.getElementById('intentlab-search');
const out=document.getElementById('intentlab-results');if(!box)return;
box.addEventListener('input',function(){const q=box.value.toLowerCase().split(/\\s+/).filter(Boolean);out.innerHTML='';
if(!q.length){out.style.display='none';return;}
const hits=I.filter(e=>{const t=(e.heading+' '+e.text+' '+e.title).toLowerCase();return q.every(w=>t.includes(w));}).slice(0,30);
out.style.display='block';if(!hits.length){out.textContent='no match';return;}
for(const e of hits){const a=document.createElement('a');a.href=encodeURIComponent(e.page)+'.html#'+encodeURIComponent(e.anchor);
a.textContent=e.page+' \u203a '+e.heading;a.className='intentlab-hit';a.style.cssText='display:block;color:#fff;padding:2px 0';
out.appendChild(a);}});})();
"""


def search_box(index_json: str) -> str:
    """The search box of every page (top right of the navigation bar) and its inlined index."""
    return ('<span style="float:right;position:relative"><input id="intentlab-search" type="search" '
            'placeholder="search all pages" aria-label="search all pages" style="width:16em">'
            '<div id="intentlab-results" style="display:none;position:absolute;right:0;background:#263238;'
            'max-height:60vh;overflow:auto;width:30em;padding:6px;z-index:200"></div></span>'
            f'<script>window.INTENTLAB_INDEX = {index_json};</script><script>{SEARCH_JS}</script>')


_REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
# nbconvert's inline loaders: mermaid's `import("https://...")`, the widget manager's `widgetRendererSrc = 'https://...'`;
# data text inside an inlined bundle (bokeh's document JSON) cannot take this shape: its quotes are escaped
_REMOTE_LOADER = re.compile(r"""\bimport\s*\(\s*["']https?://|\bwidgetRendererSrc\s*=\s*["']https?://""")


def offline(page: str) -> str:
    """The page without what loads from the network: scripts with a remote src, nbconvert's inline loaders that
    fetch from CDNs (mermaid, the widget manager), remote stylesheets. An inline script that only mentions a CDN host
    stays: bokeh's inlined bundle names cdn.jsdelivr.net for features the suite's views do not use (TeX labels, an
    icon font), and the browser tests check that no request leaves the machine."""
    def keep(m):
        tag = m.group(0)
        head = tag[:tag.index(">") + 1]
        return "" if _REMOTE.search(head) or _REMOTE_LOADER.search(tag) else tag
    page = _SCRIPT.sub(keep, page)
    return re.sub(r"<link\b[^>]*href=[\"']https?://[^>]*>", "", page, flags=re.I)     # e.g. the player's icon font


def page_name(stem: str) -> str:
    """The site's file name of a notebook's page, without .html: "05_adarec_adaptive_depth",
    "evidence-05_adarec_adaptive_depth" (every page in one folder: relative links and MathJax work from file://)."""
    return stem.replace("/", "-")


def href(stem: str, anchor: str = "") -> str:
    """A link to a notebook's page, quoted for a URL and escaped for an attribute."""
    url = urllib.parse.quote(page_name(stem)) + ".html" + (f"#{urllib.parse.quote(anchor)}" if anchor else "")
    return html.escape(url, quote=True)


_NB_LINK = re.compile(r'href="(\.\./)?(evidence/)?(\d\d_[\w-]+)\.ipynb(#[^"]*)?"')


def notebook_links(page: str, stem: str) -> str:
    """The page with its links to other notebooks (markdown links such as `[evidence 04](evidence/04_....ipynb)` in a
    lesson, `[lesson 04](../04_....ipynb)` in an evidence notebook) pointing at their pages on the site."""
    in_evidence = stem.startswith("evidence/")

    def target(m):
        up, ev, name, anchor = m.groups()
        evidence_target = bool(ev) if (up or not in_evidence) else True
        return f'href="{href(("evidence/" if evidence_target else "") + name)}{anchor or ""}"'
    return _NB_LINK.sub(target, page)


def inline_json(value) -> str:
    """JSON to inline in a <script>: every '<', '>' and '&' as a unicode escape, so no text in it (a dataset's title
    such as '</script><script>...' or '<!--<script>') can end or comment out the script it sits in."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def notebook_title(nb) -> str:
    """The first markdown heading of a notebook, without its '#'."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def nav_bar(stems: list[str], i: int) -> str:
    """The bar on top of page i of stems (the lessons in order, then the evidence notebooks): the index, the previous
    and next page, and the lesson's evidence page (or the evidence notebook's lesson) when it is there."""
    link = lambda stem, text: f'<a style="color:#fff;margin-right:1.2em" href="{href(stem)}">{html.escape(text)}</a>'
    parts = ['<a style="color:#fff;margin-right:1.2em" href="index.html">IntentLab: all notebooks</a>']
    if i > 0:
        parts.append(link(stems[i - 1], f"← {stems[i - 1]}"))
    if i + 1 < len(stems):
        parts.append(link(stems[i + 1], f"{stems[i + 1]} →"))
    stem = stems[i]
    twin = stem.removeprefix("evidence/") if stem.startswith("evidence/") else f"evidence/{stem}"
    if twin in stems:
        parts.append(link(twin, "the lesson" if stem.startswith("evidence/") else "its evidence: the paper's claims"))
    return f'<div id="intentlab-nav" style="{NAV_STYLE}">{"".join(parts)}<!--search--></div>'


def provenance_bar(prov: dict) -> str:
    """One line on a page: which commit, date, parameters, machine and versions produced its numbers."""
    changed = ", ".join(f"{k}={v!r}" for k, v in prov["changed"].items()) or "defaults"
    commit = (prov["commit"] or "unknown")[:10] + (" (uncommitted changes)" if prov["dirty"] else "")
    text = (f"commit {commit} · {prov['date']} · parameters: {changed} · {'smoke run · ' if prov['smoke'] else ''}"
            f"{prov['seconds'] / 60:.1f} min on {prov['device']} · torch {prov['versions'].get('torch')}")
    return (f'<div id="intentlab-provenance" style="background:#eceff1;font:12px system-ui,sans-serif;'
            f'padding:3px 12px">{html.escape(text)}</div>')


def executed_notebooks(runs: Path) -> tuple[list[str], list[str]]:
    """(stems of complete executed notebooks in runs/ and runs/evidence/, lessons first; stems whose last run failed:
    lib.run leaves their partial copy as <stem>.failed.ipynb)."""
    def stems(pattern):
        return sorted(p.relative_to(runs).with_suffix("").as_posix() for p in runs.glob(pattern)
                      if not p.name.endswith(".failed.ipynb"))
    done = stems("[0-9][0-9]_*.ipynb") + stems("evidence/[0-9][0-9]_*.ipynb")
    failed = sorted(p.relative_to(runs).as_posix().removesuffix(".failed.ipynb")
                    for pattern in ("[0-9][0-9]_*.failed.ipynb", "evidence/[0-9][0-9]_*.failed.ipynb")
                    for p in runs.glob(pattern))
    return done, failed


def _failed_banner(runs: Path, stem: str) -> str:
    partial = runs / f"{stem}.failed.ipynb"
    if not partial.is_file() or partial.stat().st_mtime < (runs / f"{stem}.ipynb").stat().st_mtime:
        return ""
    return ('<div class="intentlab-failed" style="background:#ffebee;color:#b00;font:13px system-ui,sans-serif;'
            f'padding:4px 12px"><b>The last run of this notebook failed</b> ({html.escape(partial.name)}): this page '
            'and its numbers are from the earlier complete run.</div>')


def _table(rows) -> str:
    trs = "".join(f'<tr><td><a href="{href(s)}">{html.escape(s)}</a></td><td>{html.escape(t)}</td>'
                  f'<td>{html.escape(h)}</td><td>{"" if sec is None else f"{sec / 60:.1f} min"}</td></tr>'
                  for s, t, h, sec, _ in rows)
    return ("<table><tr><th>notebook</th><th>title</th><th>headline (from its results file)</th><th>run time</th>"
            f"</tr>{trs}</table>")


def build(runs_dir="runs", site_dir="site") -> Path:
    """Write site_dir/index.html and one page per executed notebook found in runs_dir (lessons, then evidence);
    returns the index's path."""
    import nbformat
    from nbconvert import HTMLExporter

    runs, site = repo_path(runs_dir), repo_path(site_dir)
    stems, failed = executed_notebooks(runs)
    if not stems:
        raise SystemExit(f"no executed notebooks in {runs}: run `make run` (or `python -m lib.run`) first")
    exporter = HTMLExporter(template_name="lab", mathjax_url=MATHJAX_URL)
    shutil.copytree(mathjax_dir(), site / "mathjax", dirs_exist_ok=True)
    rows, built, entries = [], {}, []
    for i, stem in enumerate(stems):
        nb = nbformat.read(runs / f"{stem}.ipynb", as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        head, sep, rest = body.partition("<body")
        tag_end = rest.index(">") + 1
        page = notebook_links(offline(head + sep + rest[:tag_end] + nav_bar(stems, i) + rest[tag_end:]), stem)
        page = page.replace("MathJax.Hub.Config({", "MathJax.Hub.Config({" + MATHJAX_FONTS, 1)
        res = results.load(runs, stem)
        prov = res["provenance"] if res else None
        top = (provenance_bar(prov) if prov else "") + _failed_banner(runs, stem)
        page = page.replace('<div id="intentlab-nav"', top + '<div id="intentlab-nav"', 1)
        title = notebook_title(nb)
        entries += search_entries(page_name(stem), title, page)
        built[stem] = page
        rows.append((stem, title, leaderboard.headline(stem, res) if res else "no results file",
                     prov["seconds"] if prov else None, prov))
    box = search_box(inline_json(entries))
    for stem, page in built.items():
        utils.atomic_write_bytes(site / f"{page_name(stem)}.html", page.replace("<!--search-->", box, 1).encode())
    from lib.run import all_notebooks, stem_of
    missing = [stem_of(p) for p in all_notebooks() if stem_of(p) not in stems]
    lessons = [r for r in rows if not r[0].startswith("evidence/")]
    evidence = [r for r in rows if r[0].startswith("evidence/")]
    commits = sorted({(p["commit"] or "unknown")[:10] + (" (dirty)" if p["dirty"] else "") for *_, p in rows if p})
    mixed = ("" if len(commits) <= 1 else "<p class='warn' style='color:#b00'><b>Warning:</b> these pages come from "
             f"different commits ({', '.join(map(html.escape, commits))}): their numbers may not belong together; "
             "re-run <code>make run</code>.</p>")
    fail = ("" if not failed else "<p class='failed' style='color:#b00'><b>Failed in the last run</b> (no page is "
            "built from a partial copy; a page shown for it is from an earlier complete run): "
            + ", ".join(html.escape(f) for f in failed) + ".</p>")
    miss = ("" if not missing else "<p>Not executed yet (run <code>.venv/bin/python -m lib.run NAME</code>, then "
            "<code>make site</code>): " + ", ".join(html.escape(m) for m in missing) + ".</p>")
    index = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>IntentLab: the executed notebooks</title>"
             f"<style>{CSS}</style></head><body><div id='intentlab-nav' style='{NAV_STYLE}'>IntentLab {box}</div>"
             f"<h1>IntentLab: the executed notebooks</h1>"
             f"<p>Every page is a notebook as <code>make run</code> executed it on "
             f"{html.escape(runs.name)}/, figures included; sliders under \"static twin\" step through precomputed "
             f"frames without a kernel. The headline of each notebook is read from its results file.</p>"
             f"<h2>The course: one mechanism per lesson</h2>{_table(lessons)}"
             f"<h2>The evidence: each paper's claims, decided</h2>"
             f"<p>Each lesson's paper claims, with seeds, ablations and why a method loses where it loses.</p>"
             f"{_table(evidence) if evidence else '<p>No evidence notebook has run yet.</p>'}"
             f"{mixed}{fail}{miss}</body></html>")
    return utils.atomic_write_bytes(site / "index.html", index.encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.site", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", help="folder of executed notebooks (default runs/)")
    ap.add_argument("--out", default="site", help="folder to write the site into (default site/)")
    a = ap.parse_args(argv)
    index = build(a.runs, a.out)
    print(f"site -> {index} (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
