"""`cnnzoo report` without a browser: what the pages hold, that they link only to each other and to files beside
them, escaping, page sizes, atomic writes, and the command's errors. tests/test_browser.py opens the pages."""

import json
import os
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cnnzoo import model_card, profile
from cnnzoo.cli import main
from cnnzoo.report import site
from cnnzoo.report.site import build_report, write_report

# One model per kind of case: MNIST; ImageNet with a figure that is not the paper's (hollow bubble) and branches;
# ImageNet with the paper's figure and a torchvision twin; CIFAR.
NAMES = ["lenet5", "googlenet", "resnet18", "resnet20"]
MAX_PAGE_BYTES = 2 * 2**20
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(out, NAMES)


class _Page(HTMLParser):
    """Tags must nest; collects links, resources, bubbles, ids and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.links, self.resources = [], [], [], []
        self.bubbles, self.blocks, self.text = [], 0, []
        self.ids, self.diagram_depth = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "svg" and "cnnzoo-diagram" in a.get("class", ""):
            self.diagram_depth = len(self.stack)
        if "id" in a and self.diagram_depth is None:  # a diagram's own ids are the diagram's business
            self.ids.append(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag in ("script", "img") and "src" in a or tag == "link" and a.get("rel") != "icon":
            self.resources.append(a.get("src") or a.get("href"))
        if tag == "circle" and "bubble" in a.get("class", ""):
            self.bubbles.append(a)
        if tag == "g" and "block" in a.get("class", "").split() and a.get("data-level") == "0":
            self.blocks += 1

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "svg" and self.diagram_depth == len(self.stack) + 1:
            self.diagram_depth = None

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors and page.stack == [], (path, page.errors[:3], page.stack[-3:])
    assert len(page.ids) == len(set(page.ids)), f"{path}: duplicate ids"
    return page


def test_site_has_an_index_a_page_per_model_and_family(built):
    out = built.index.parent
    families = {model_card(n).family for n in NAMES}
    expected = {out / "index.html"} | {out / "models" / f"{n}.html" for n in NAMES} | \
        {out / "families" / f"{f}.html" for f in families}
    assert set(built.pages) == expected and all(p.is_file() for p in expected)
    assert (out / "assets" / "site.js").is_file() and (out / "assets" / "site.css").is_file()
    assert write_report  # the public one-call form is the same build (test_write_report_returns_the_index)


def test_every_page_parses_and_links_only_to_files_beside_it(built):
    out = built.index.parent
    for path in built.pages:
        page = parse(path)
        for ref in page.resources:  # stylesheets and scripts: relative files that exist, never a network address
            assert not re.match(r"[a-z]+:", ref) and not ref.startswith("//"), (path, ref)
            assert (path.parent / ref).resolve().is_file(), (path, ref)
        for ref in page.links:
            if re.match(r"https?://", ref):
                continue  # the papers and torchvision's docs: links the reader follows, never fetched by the page
            target = (path.parent / ref.split("#")[0]).resolve()
            assert target.is_file() and out.resolve() in target.parents, (path, ref)
        assert path.stat().st_size < MAX_PAGE_BYTES


def test_index_links_every_model_and_family_and_lists_every_claim(built):
    page = parse(built.index)
    for name in NAMES:
        assert f"models/{name}.html" in page.links
        assert f"families/{model_card(name).family}.html" in page.links
    html = built.index.read_text()
    assert html.count('<tr class="verdict-') == len(site.lecture_claims()) > 30
    for verdict in ("agrees", "wrong"):
        assert f'<span class="verdict">{verdict}</span>' in html


def test_chart_has_one_bubble_per_reported_error_on_its_dataset(built):
    page = parse(built.index)
    top1 = {(b["data-dataset"], b["data-name"]) for b in page.bubbles if b["data-metric"] == "top-1"}
    # every model here reports a top-1 error except GoogLeNet, whose figure is BVLC's replication's
    assert top1 == {(model_card(n).dataset, n) for n in NAMES}
    googlenet = next(b for b in page.bubbles if b["data-name"] == "googlenet")
    assert googlenet["data-paper"] == "0" and "other" in googlenet["class"] and "BVLC" in googlenet["data-source"]
    resnet18 = next(b for b in page.bubbles if b["data-name"] == "resnet18" and b["data-metric"] == "top-1")
    assert resnet18["data-paper"] == "1" and resnet18["data-error"] == f"{model_card('resnet18').top1_err:g}"
    assert resnet18["data-params"] == "11.7M" and resnet18["data-macs"] == "1.81G"
    # ImageNet's top-1 chart is the one shown first; the others wait for the filters
    html = built.index.read_text()
    assert '<figure class="chart" data-dataset="imagenet" data-metric="top1">' in html
    assert '<figure class="chart" data-dataset="cifar10" data-metric="top1" hidden>' in html


def test_model_page_holds_card_diagram_layers_rf_memory_and_recipe(built):
    from cnnzoo.report.diagram import diagram

    path = built.index.parent / "models" / "resnet18.html"
    page = parse(path)
    html = path.read_text()
    for section in ("card", "diagram", "layers", "receptive-field", "memory", "recipe"):
        assert section in page.ids
    assert page.blocks == diagram("resnet18").blocks > 0
    assert "torchvision.models.resnet18" in html and "arxiv.org/abs/1512.03385" in html
    assert "11,689,512 computed" in html and "Sec. 3.4" in html  # the recipe's source
    data = json.loads(re.search(r'<script type="application/json" class="layer-data">(.*?)</script>', html).group(1))
    prof = profile("resnet18")
    assert [len(level["rows"]) for level in data["levels"]] == [len(prof.rollup(1)), len(prof.rollup(2)),
                                                                 len(prof.rollup(3)), len(prof.layers)]
    assert data["levels"][0]["rows"][0] == ["conv1", "Conv2d", "1x64x112x112", "9,408", "118M", "3.06 MiB", "7", "2"]


def test_family_page_puts_variants_side_by_side(built):
    page = parse(built.index.parent / "families" / "resnet.html")
    html = (built.index.parent / "families" / "resnet.html").read_text()
    # this report holds resnet18 (ImageNet) and resnet20 (CIFAR-10): one section per dataset
    assert '<section class="dataset" data-dataset="imagenet">' in html
    assert '<section class="dataset" data-dataset="cifar10">' in html
    assert {"../models/resnet18.html", "../models/resnet20.html"} <= set(page.links)
    assert html.count('<figure class="variant">') == 2


def test_text_is_escaped(built):
    card = model_card("resnet18")
    evil = "<script>alert('x')</script> & \"quotes\""
    html = site._card_section(replace(card, deviations=(evil,), err_source=evil), _row(built, "resnet18"),
                              profile("resnet18"))
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    # JSON inside a <script> element cannot end it
    assert "</script>" not in site._json({"name": "</script><script>alert(1)</script>"})
    assert json.loads(site._json({"a": "</script> & <b>"})) == {"a": "</script> & <b>"}


def _row(built, name):
    from cnnzoo.analysis.compare import compare

    return compare([name])[0]


def test_write_report_returns_the_index(tmp_path):
    index = write_report(tmp_path / "site", "lenet5")
    assert index == tmp_path / "site" / "index.html" and index.is_file()
    assert (tmp_path / "site" / "models" / "lenet5.html").is_file()


def test_a_failed_write_leaves_the_earlier_page_whole(tmp_path, monkeypatch):
    out = tmp_path / "site"
    write_report(out, "lenet5")
    before = {p: p.read_bytes() for p in out.rglob("*.html")}
    calls = []
    real = os.replace

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # the assets, the index, then the model's page
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space"):
        write_report(out, "lenet5")
    assert {p: p.read_bytes() for p in out.rglob("*.html")} == before  # every page still the whole earlier one
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.parametrize("args, message", [
    (["vgg17"], "unknown model 'vgg17'; did you mean"),
    (["nothing*"], "no model matches pattern 'nothing*'"),
])
def test_cli_bad_names_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["report", "--out", str(tmp_path / "site"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("cnnzoo report: error:")
    assert not (tmp_path / "site").exists()  # nothing written for a bad name


def test_cli_out_that_is_a_file_is_an_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file")
    assert main(["report", "--out", str(target), "lenet5"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1
    assert target.read_text() == "a file"


def test_cli_needs_out(capsys):
    assert main(["report", "lenet5"]) == 2
    assert "required: --out" in capsys.readouterr().err


def test_cli_writes_the_site_and_says_where(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path / "site"), "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 pages" in out and str(tmp_path / "site" / "index.html") in out
    assert re.search(r"largest page \S+\.html, \d+\.\d\d MiB", out)
