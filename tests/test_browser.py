"""The report of the whole zoo in a real headless browser: Debian's chromium driven by Playwright.

Every page loads from file:// with no console error, no script error and no failed request; each model page's
diagram has its top-level blocks; hovering a bubble shows its tooltip; a click opens the model's page; the table
sorts. Screenshots go to $CNNZOO_SCREENSHOTS (default: a temporary folder) for a reader to look at.

The browser is the system's (`apt-get install chromium`; Playwright's own download cannot work here). Without it
these tests skip, unless CI is set: then they fail, so CI never passes without having run them.
"""

import os
import shutil
from pathlib import Path

import pytest

from cnnzoo import list_models, model_card

MAX_PAGE_BYTES = 2 * 2**20


def _browser_or_reason():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        return None, "no system browser: apt-get install chromium"
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        return None, "Playwright's Python package is missing: pip install -e '.[test]'"
    return executable, ""


@pytest.fixture(scope="module")
def browser():
    executable, reason = _browser_or_reason()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the browser tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, browser):
    """The report of the whole zoo, built once for this module (after the browser is found: no build for nothing)."""
    from cnnzoo.report.site import build_report

    return build_report(tmp_path_factory.mktemp("zoo-report"))


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = Path(os.environ.get("CNNZOO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Watched:
    """A page that records console errors, uncaught script errors and failed requests."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed request: {r.url} ({r.failure})"))
        self.requests = []
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, path: Path):
        self.problems.clear()
        self.requests.clear()
        self.page.goto(path.as_uri(), wait_until="load")
        return self.page


@pytest.fixture
def watched(browser):
    w = _Watched(browser)
    yield w
    w.page.close()


def test_every_page_loads_offline_without_errors_and_diagrams_are_whole(zoo, watched):
    from cnnzoo.report.diagram import diagram

    root = zoo.index.parent
    for name in ("lenet5", "googlenet", "densenet121"):  # the build's counts are the diagram's own (drawn afresh)
        assert zoo.blocks[name] == diagram(name).blocks
    names = list_models()
    assert len(zoo.pages) == 1 + len(names) + len({model_card(n).family for n in names})
    for path in zoo.pages:
        assert path.stat().st_size < MAX_PAGE_BYTES, path
        page = watched.open(path)
        assert watched.problems == [], (path, watched.problems)
        outside = [u for u in watched.requests if not u.startswith(root.as_uri()) and not u.startswith("data:")]
        assert outside == [], (path, outside)  # the page fetched nothing from anywhere but the site's own folder
        if path.parent.name == "models":
            name = path.stem
            drawn = page.locator("#diagram svg.cnnzoo-diagram g.block[data-level='0']").count()
            assert drawn == zoo.blocks[name] > 0, name
            rows = page.locator("#layers tbody tr").count()  # the script filled the first roll-up level in
            assert rows > 0, name


def test_hovering_a_bubble_shows_its_figures_and_a_click_opens_its_page(zoo, watched, screenshots):
    page = watched.open(zoo.index)
    page.set_viewport_size({"width": 1280, "height": 1200})  # the whole chart in the screenshot
    tooltip = page.locator("#chart .tooltip")
    assert tooltip.is_hidden()
    bubble = page.locator("figure.chart:not([hidden]) circle.bubble[data-name='resnet50']")
    bubble.hover()
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    card = model_card("resnet50")
    for part in ("resnet50", "25.6M", "3.86G", f"{card.top1_err:g}%", "Table 3"):
        assert part in text, (part, text)
    page.screenshot(path=str(screenshots / "index.png"), clip={"x": 0, "y": 180, "width": 1280, "height": 1020})
    page.mouse.move(5, 5)
    tooltip.wait_for(state="hidden")
    with page.expect_navigation():
        bubble.click()
    assert page.url.endswith("/models/resnet50.html")
    assert page.locator("h1").inner_text() == "resnet50"
    assert watched.problems == []


def test_filters_switch_dataset_metric_and_families(zoo, watched):
    page = watched.open(zoo.index)
    visible = "figure.chart:not([hidden]) a:not(.off) circle.bubble"
    imagenet_top1 = page.locator(visible).count()
    assert imagenet_top1 > 20
    page.check("#chart input[name=metric][value=top5]")
    assert page.locator("figure.chart:not([hidden])").get_attribute("data-metric") == "top5"
    page.check("#chart input[name=metric][value=top1]")
    page.uncheck("#chart input[name=family][value=vgg]")
    vgg = page.locator("figure.chart:not([hidden]) circle.bubble[data-family='vgg']").count()
    assert vgg > 0 and page.locator(visible).count() == imagenet_top1 - vgg
    page.check("#chart input[name=lecture]")  # the lecture's own chart, without VGG now
    shown = page.locator(visible).evaluate_all("els => els.map(e => e.dataset.name)")
    from cnnzoo.analysis.compare import LECTURE_SELECTION

    assert set(shown) == {n for n in LECTURE_SELECTION if model_card(n).family != "vgg"}
    page.check("#chart input[name=dataset][value=cifar10]")
    assert page.locator(visible).count() == 0  # the lecture's chart holds ImageNet models only
    page.uncheck("#chart input[name=lecture]")
    assert set(page.locator(visible).evaluate_all("els => els.map(e => e.dataset.dataset)")) == {"cifar10"}
    assert watched.problems == []


def test_comparison_table_sorts_by_a_column(zoo, watched):
    page = watched.open(zoo.index)
    header = page.locator("table.compare th", has_text="params")
    column = page.locator("table.compare thead th").all_inner_texts().index(header.inner_text())

    def params():
        return [float(v) for v in page.locator(f"table.compare tbody td:nth-child({column + 1})")
                .evaluate_all("tds => tds.map(td => td.dataset.sort)")]

    assert params() != sorted(params())  # compare's order: by year
    header.locator("button").click()
    assert params() == sorted(params()) and header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert params() == sorted(params(), reverse=True) and header.get_attribute("aria-sort") == "descending"
    assert watched.problems == []


def test_layer_levels_and_screenshots_of_a_model_and_a_family(zoo, watched, screenshots):
    from cnnzoo import profile

    root = zoo.index.parent
    page = watched.open(root / "models" / "densenet264.html")
    prof = profile("densenet264")
    assert page.locator("#layers tbody tr").count() == len(prof.rollup(1))
    page.locator("#layers .levels button", has_text="every layer").click()
    assert page.locator("#layers tbody tr").count() == len(prof.layers)
    page = watched.open(root / "models" / "resnet50.html")
    page.screenshot(path=str(screenshots / "model-resnet50.png"))  # the card and the top of the diagram
    page.locator("#receptive-field").screenshot(path=str(screenshots / "model-resnet50-receptive-field.png"))
    page = watched.open(root / "families" / "vgg.html")
    assert page.locator("figure.variant").count() == len(list_models("vgg*"))
    page.screenshot(path=str(screenshots / "family-vgg.png"), full_page=True)
    assert watched.problems == []
