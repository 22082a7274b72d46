"""`make site` from the smoke runs, opened in headless Chromium: every page loads without a JavaScript error, every
image shows, every local link resolves, the index carries each notebook's headline, and each static twin's slider
changes the frame it shows."""
import re

import pytest

from lib import browser, run, site

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def built_site(smoke_results, smoke_dir, tmp_path_factory):
    for stem in [run.stem_of(p) for p in run.all_notebooks()]:        # 08 last: it reads the others' results
        smoke_results(stem)
    out = tmp_path_factory.mktemp("site")
    site.build(smoke_dir, out)
    return out


def test_index_and_local_links(built_site):
    index = (built_site / "index.html").read_text()
    for p in run.all_notebooks():
        name = site.page_name(run.stem_of(p))
        assert f'href="{name}.html"' in index, name
        assert (built_site / f"{name}.html").is_file()
    assert "no results file" not in index and "Not executed yet" not in index
    assert "SASRec NDCG@10" in index                            # notebook 01's headline, from its results file
    for page in built_site.glob("*.html"):
        text = page.read_text()
        markup = re.sub(r"<script\b.*?</script>", "", text, flags=re.S | re.I)   # links of the page, not of JS code
        for href in re.findall(r'href="([^"#:]+)"', markup):    # relative links (no scheme, no anchor-only)
            assert (built_site / href).is_file(), f"{page.name} links to a missing {href}"
        for src in re.findall(r'<img[^>]+src="([^"]+)"', markup):
            assert src.startswith("data:image/") or (built_site / src).is_file(), f"{page.name}: image {src[:40]}"
        assert not re.search(r"<script[^>]+src=\"https?://", text), f"{page.name} loads a script from the network"


def font_noise(msg) -> bool:
    """MathJax probing web fonts from file:// (Chromium refuses fonts across file origins; the package ships STIX-Web,
    not MathJax's TeX fonts): the page renders with the fonts it can load; every other console error counts."""
    url = (msg.location or {}).get("url", "")
    return (msg.text.startswith("Access to font at") or "/mathjax/fonts/" in url
            or (url == "about:blank" and msg.text.startswith("Failed to load resource")))


def test_pages_in_chromium(built_site):
    problems, stepped = [], 0
    with browser.browser() as b:
        page = b.new_page()
        log = []
        page.on("pageerror", lambda e: log.append(f"page error: {e}"))
        page.on("console", lambda m: log.append(f"console: {m.text}") if m.type == "error" and not font_noise(m) else None)
        for f in sorted(built_site.glob("*.html")):
            log.clear()
            page.goto(f.as_uri(), wait_until="load")
            broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                                   ".map(i => i.src.slice(0, 40))")
            problems += [f"{f.name}: {x}" for x in log] + [f"{f.name}: broken image {x}" for x in broken]
            for slider_id in page.evaluate("Array.from(document.querySelectorAll('input[type=range]')).map(s => s.id)"):
                img_id = slider_id.replace("_anim_slider", "_anim_img")
                before = page.evaluate(f"document.getElementById('{img_id}').src")
                page.evaluate(f"""() => {{ const s = document.getElementById('{slider_id}');
                                   s.value = s.max; s.dispatchEvent(new Event('input')); }}""")
                after = page.evaluate(f"document.getElementById('{img_id}').src")
                if before == after:
                    problems.append(f"{f.name}: slider {slider_id} does not change the frame")
                stepped += 1
    assert not problems, "\n".join(problems)
    assert stepped >= 3, "the static twins of 03, 04 and 06 each have a slider"


MATHJAX_DONE = ("() => window.MathJax && MathJax.Hub && MathJax.isReady && MathJax.Hub.queue.pending === 0 "
                "&& !MathJax.Hub.queue.running")


def test_math_renders_offline_and_no_request_leaves_the_machine(built_site):
    """Every page with a formula shows MathJax's rendered output and no LaTeX source in its markdown; every request
    the pages make stays on file:// or data:."""
    rendered, outside = {}, []
    with browser.browser() as b:
        page = b.new_page()
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
        for f in sorted(built_site.glob("[0-9][0-9]_*.html")):
            page.goto(f.as_uri(), wait_until="load")
            page.wait_for_function(MATHJAX_DONE, timeout=60_000)
            md = page.evaluate("Array.from(document.querySelectorAll('.jp-RenderedMarkdown')).map(e => e.innerText).join('\\n')")
            assert "$\\" not in md and "\\begin{" not in md, f"{f.name}: LaTeX source left in the text"
            rendered[f.stem] = page.evaluate("document.querySelectorAll('.MathJax, .MathJax_Display, mjx-container').length")
    assert not outside, f"requests that leave the machine: {outside[:5]}"
    for stem in ("01_sasrec_baseline", "02_dual_view_fusion", "03_diffusion_trajectories", "05_adarec_adaptive_depth",
                 "07_deftrec_contrastive_diffusion"):
        assert rendered[stem] > 5, f"{stem}: formulas are not rendered ({rendered[stem]} MathJax elements)"


def test_search_finds_a_section_and_opens_it(built_site):
    with browser.browser() as b:
        page = b.new_page()
        page.goto((built_site / "01_sasrec_baseline.html").as_uri(), wait_until="load")
        page.fill("#intentlab-search", "silhouette")
        hits = page.evaluate("Array.from(document.querySelectorAll('#intentlab-results a')).map(a => a.getAttribute('href'))")
        assert any(h.startswith("04_intent_clusters.html#") for h in hits), hits[:10]
        page.click("#intentlab-results a[href^='04_intent_clusters.html#']")
        page.wait_for_load_state("load")
        assert page.url.split("/")[-1].startswith("04_intent_clusters.html#")
        assert page.evaluate("document.getElementById(decodeURIComponent(location.hash.slice(1))) !== null")
        page.fill("#intentlab-search", "zzqq no such word")
        assert page.inner_text("#intentlab-results") == "no match"


def test_every_page_states_its_provenance(built_site):
    index = (built_site / "index.html").read_text()
    assert "different commits" not in index                    # the smoke runs of one test session share a commit
    for f in sorted(built_site.glob("[0-9][0-9]_*.html")):
        text = f.read_text()
        m = re.search(r'<div id="intentlab-provenance"[^>]*>(.*?)</div>', text)
        assert m, f"{f.name} has no provenance line"
        assert re.search(r"commit (\w{10}|unknown)", m.group(1)) and "smoke run" in m.group(1) and "torch" in m.group(1)
        assert "parameters:" in m.group(1) and "smoke=True" in m.group(1)
    for stem in ("03_diffusion_trajectories", "06_hdrec_dual_lora", "08_leaderboard"):   # a run time for every notebook
        assert re.search(rf'{stem}\.html">{stem}</a></td><td>[^<]*</td><td>[^<]*</td><td>\d+\.\d min</td>', index), stem


def test_lessons_and_evidence_link_both_ways(built_site):
    index = (built_site / "index.html").read_text()
    assert index.index("<h2>The course") < index.index("<h2>The evidence")
    for p in run.evidence():
        stem = run.stem_of(p)
        lesson, evidence = (built_site / f"{site.page_name(stem.removeprefix('evidence/'))}.html",
                            built_site / f"{site.page_name(stem)}.html")
        assert f'href="{site.page_name(stem)}.html"' in lesson.read_text(), f"{lesson.name} links to its evidence"
        assert f'href="{lesson.name}"' in evidence.read_text(), f"{evidence.name} links back to its lesson"


def test_a_failed_run_gets_no_page_and_an_older_page_is_marked(tmp_path):
    import os
    runs = tmp_path / "runs"
    (runs / "evidence").mkdir(parents=True)
    for name in ("01_a.ipynb", "01_a.failed.ipynb", "evidence/01_a.ipynb", "02_b.failed.ipynb"):
        (runs / name).write_text("{}")
    os.utime(runs / "01_a.ipynb", (1, 1))                  # the complete copy is older than the failed one
    done, failed = site.executed_notebooks(runs)
    assert done == ["01_a", "evidence/01_a"] and failed == ["01_a", "02_b"]
    assert "last run of this notebook failed" in site._failed_banner(runs, "01_a")
    assert site._failed_banner(runs, "evidence/01_a") == ""
