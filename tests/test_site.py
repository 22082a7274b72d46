"""`make site` from the smoke runs, opened in headless Chromium: every page loads without a JavaScript error, every
image shows, every local link resolves, the index carries each notebook's headline, and each static twin's slider
changes the frame it shows."""
import re

import pytest

from lib import browser, run, site

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def built_site(smoke_results, smoke_dir, tmp_path_factory):
    for stem in [p.stem for p in run.all_notebooks()]:        # 08 last: it reads the others' results
        smoke_results(stem)
    out = tmp_path_factory.mktemp("site")
    site.build(smoke_dir, out)
    return out


def test_index_and_local_links(built_site):
    index = (built_site / "index.html").read_text()
    for p in run.all_notebooks():
        assert f'href="{p.stem}.html"' in index, p.stem
        assert (built_site / f"{p.stem}.html").is_file()
    assert "no results file" not in index and "Not executed yet" not in index
    assert "SASRec NDCG@10" in index                            # notebook 01's headline, from its results file
    for page in built_site.glob("*.html"):
        text = page.read_text()
        for href in re.findall(r'href="([^"#:]+)"', text):      # relative links (no scheme, no anchor-only)
            assert (built_site / href).is_file(), f"{page.name} links to a missing {href}"
        for src in re.findall(r'<img[^>]+src="([^"]+)"', text):
            assert src.startswith("data:image/") or (built_site / src).is_file(), f"{page.name}: image {src[:40]}"
        assert not re.search(r"<script[^>]+src=\"https?://", text), f"{page.name} loads a script from the network"


def test_pages_in_chromium(built_site):
    problems, stepped = [], 0
    with browser.browser() as b:
        page = b.new_page()
        log = []
        page.on("pageerror", lambda e: log.append(f"page error: {e}"))
        page.on("console", lambda m: log.append(f"console: {m.text}") if m.type == "error" else None)
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
