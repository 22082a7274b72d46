"""`make site` (`python -m lib.site`): the executed notebooks of `runs/` as a static HTML site for readers without
a kernel: an index with every notebook's headline numbers, one page per notebook (figures inline, navigation
between them), and each widget's static twin (a slider driven by the page itself) as the notebooks draw it.

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
for(const e of hits){const a=document.createElement('a');a.href=e.page+'.html#'+encodeURIComponent(e.anchor);
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


def offline(page: str) -> str:
    """The page without scripts or stylesheets that load from the network (a src, href or import of http(s))."""
    def keep(m):
        tag = m.group(0)
        head = tag[:tag.index(">") + 1]
        if re.search(r"src=[\"']https?://", head) or re.search(r"(unpkg\.com|cdnjs\.cloudflare\.com|cdn\.jsdelivr)", tag):
            return ""
        return tag
    page = _SCRIPT.sub(keep, page)
    return re.sub(r"<link\b[^>]*href=[\"']https?://[^>]*>", "", page, flags=re.I)     # e.g. the player's icon font


def notebook_title(nb) -> str:
    """The first markdown heading of a notebook, without its '#'."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def nav_bar(pages: list[str], i: int) -> str:
    link = lambda href, text: f'<a style="color:#fff;margin-right:1.2em" href="{href}">{html.escape(text)}</a>'
    parts = [link("index.html", "IntentLab: all notebooks")]
    if i > 0:
        parts.append(link(f"{pages[i - 1]}.html", f"← {pages[i - 1]}"))
    if i + 1 < len(pages):
        parts.append(link(f"{pages[i + 1]}.html", f"{pages[i + 1]} →"))
    return f'<div id="intentlab-nav" style="{NAV_STYLE}">{"".join(parts)}<!--search--></div>'


def provenance_bar(prov: dict) -> str:
    """One line on a page: which commit, date, parameters, machine and versions produced its numbers."""
    changed = ", ".join(f"{k}={v!r}" for k, v in prov["changed"].items()) or "defaults"
    commit = (prov["commit"] or "unknown")[:10] + (" (uncommitted changes)" if prov["dirty"] else "")
    text = (f"commit {commit} · {prov['date']} · parameters: {changed} · {'smoke run · ' if prov['smoke'] else ''}"
            f"{prov['seconds'] / 60:.1f} min on {prov['device']} · torch {prov['versions'].get('torch')}")
    return (f'<div id="intentlab-provenance" style="background:#eceff1;font:12px system-ui,sans-serif;'
            f'padding:3px 12px">{html.escape(text)}</div>')


def build(runs_dir="runs", site_dir="site") -> Path:
    """Write site_dir/index.html and one page per executed notebook found in runs_dir; returns the index's path."""
    import nbformat
    from nbconvert import HTMLExporter

    runs, site = repo_path(runs_dir), repo_path(site_dir)
    executed = sorted(runs.glob("[0-9][0-9]_*.ipynb"))
    if not executed:
        raise SystemExit(f"no executed notebooks in {runs}: run `make run` (or `python -m lib.run`) first")
    pages = [p.stem for p in executed]
    exporter = HTMLExporter(template_name="lab", mathjax_url=MATHJAX_URL)
    shutil.copytree(mathjax_dir(), site / "mathjax", dirs_exist_ok=True)
    rows, built, entries = [], {}, []
    for i, path in enumerate(executed):
        nb = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        head, sep, rest = body.partition("<body")
        tag_end = rest.index(">") + 1
        page = offline(head + sep + rest[:tag_end] + nav_bar(pages, i) + rest[tag_end:])
        page = page.replace("MathJax.Hub.Config({", "MathJax.Hub.Config({" + MATHJAX_FONTS, 1)
        res = results.load(runs, path.stem)
        prov = res["provenance"] if res else None
        if prov:
            page = page.replace('<div id="intentlab-nav"', provenance_bar(prov) + '<div id="intentlab-nav"', 1)
        title = notebook_title(nb)
        entries += search_entries(path.stem, title, page)
        built[path.stem] = page
        rows.append((path.stem, title, leaderboard.headline(path.stem, res) if res else "no results file",
                     prov["seconds"] if prov else None, prov))
    box = search_box(json.dumps(entries).replace("</", "<\\/"))
    for stem, page in built.items():
        utils.atomic_write_bytes(site / f"{stem}.html", page.replace("<!--search-->", box, 1).encode())
    from lib.run import all_notebooks
    missing = [p.stem for p in all_notebooks() if p.stem not in pages]
    trs = "".join(f'<tr><td><a href="{s}.html">{s}</a></td><td>{html.escape(t)}</td><td>{html.escape(h)}</td>'
                  f'<td>{"" if sec is None else f"{sec / 60:.1f} min"}</td></tr>' for s, t, h, sec, _ in rows)
    commits = sorted({(p["commit"] or "unknown")[:10] + (" (dirty)" if p["dirty"] else "") for *_, p in rows if p})
    mixed = ("" if len(commits) <= 1 else "<p class='warn' style='color:#b00'><b>Warning:</b> these pages come from "
             f"different commits ({', '.join(map(html.escape, commits))}): their numbers may not belong together; "
             "re-run <code>make run</code>.</p>")
    miss = ("" if not missing else "<p>Not executed yet (run <code>.venv/bin/python -m lib.run NN</code>, then "
            "<code>make site</code>): " + ", ".join(html.escape(m) for m in missing) + ".</p>")
    index = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>IntentLab: the executed notebooks</title>"
             f"<style>{CSS}</style></head><body><div id='intentlab-nav' style='{NAV_STYLE}'>IntentLab {box}</div>"
             f"<h1>IntentLab: the executed notebooks</h1>"
             f"<p>Every page is a notebook as <code>make run</code> executed it on "
             f"{html.escape(runs.name)}/, figures included; sliders under \"static twin\" step through precomputed "
             f"frames without a kernel. The headline of each notebook is read from its results file.</p>"
             f"<table><tr><th>notebook</th><th>title</th><th>headline (from its results file)</th><th>run time</th></tr>"
             f"{trs}</table>{mixed}{miss}</body></html>")
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
