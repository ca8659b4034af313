"""`compare` rows against independent counts, its sorting and filtering, the chart files, and `cnnzoo compare`."""

import dataclasses
import json
import os
import sys

import pytest
import torch

import cnnzoo
from cnnzoo import cli
from cnnzoo.analysis.compare import (AREA_PER_MPARAM, LECTURE_SELECTION, PLOT_DATASET, ChartPoint, CompareRow,
                                     chart_figure, chart_points, compare, plot, weight_depth)

compare_module = sys.modules["cnnzoo.analysis.compare"]  # `cnnzoo.analysis.compare` is also the function

SMALL = ["lenet5", "alexnet", "vgg11", "resnet18", "squeezenet1_0"]


@pytest.fixture(scope="module")
def rows():
    return compare(SMALL)


def test_rows_match_the_model_and_its_card(rows):
    assert sorted(r.name for r in rows) == sorted(SMALL)
    for r in rows:
        card = cnnzoo.model_card(r.name)
        with torch.device("meta"):
            model = cnnzoo.create_model(r.name)
        result = cnnzoo.profile(r.name)
        assert r.params == cnnzoo.count_params(model)
        assert r.macs == result.macs and r.activation_bytes == result.activation_bytes
        assert (r.top1_err, r.top5_err, r.err_source) == (card.top1_err, card.top5_err, card.err_source)
        assert (r.family, r.year, r.dataset, r.input_size) == (card.family, card.year, card.dataset, card.input_size)


def test_depth_is_the_longest_path_of_weight_layers(rows):
    # the papers' depths: projection shortcuts are a shorter path; LeNet-5's RBF output is a weight layer (its
    # fixed codes times F6's state), so C1, C3, C5, F6, output
    assert {r.name: r.depth for r in rows} == {"lenet5": 5, "alexnet": 8, "vgg11": 11, "resnet18": 18,
                                               "squeezenet1_0": 18}
    assert weight_depth("googlenet") == 22  # parallel branches count once, auxiliary heads are off in eval


def test_depth_of_a_hand_built_net():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))
    assert weight_depth(net, (3, 8, 8)) == 3
    assert net.training  # restored


def test_sorted_by_year_then_macs(rows):
    keys = [(r.year, r.macs, r.name) for r in rows]
    assert keys == sorted(keys)
    assert [r.name for r in rows][:2] == ["lenet5", "alexnet"]


def test_filter_by_pattern_and_dataset():
    assert [r.name for r in compare(["vgg1?", "resnet18"])] == ["vgg11", "vgg13", "vgg16", "vgg19", "resnet18"]
    assert [r.name for r in compare(["lenet*", "resnet2?"], dataset="cifar10")] == ["resnet20"]
    assert all(r.dataset == "mnist" for r in compare(dataset="mnist"))
    assert [r.name for r in compare("resnet18")] == ["resnet18"]


@pytest.mark.parametrize("names, message", [(["nope*"], "no model matches"), (["resnet19"], "did you mean"),
                                            (["lenet5"], "for dataset")])
def test_bad_names(names, message):
    with pytest.raises(ValueError, match=message):
        compare(names, dataset="cifar10" if message == "for dataset" else None)


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<svg")])
def test_plot_is_written_atomically(rows, tmp_path, ext, magic):
    path = tmp_path / f"zoo{ext}"
    left_off = plot(rows, path)
    data = path.read_bytes()
    assert data.startswith(magic) if ext == ".png" else magic in data
    assert os.listdir(tmp_path) == [path.name]  # no temp file lingers
    assert left_off == ["lenet5"]  # MNIST: not on the ImageNet chart


def test_plot_bad_extension_and_nothing_to_plot(rows, tmp_path):
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        plot(rows, tmp_path / "zoo.jpg")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot([r for r in rows if r.name == "lenet5"], tmp_path / "zoo.png")
    assert os.listdir(tmp_path) == []


def test_cli_json(capsys):
    assert cli.main(["compare", "resnet18", "lenet5", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out] == ["lenet5", "resnet18"]
    assert set(out[0]) == {f for f in CompareRow.__dataclass_fields__}
    assert out[1]["input_size"] == [3, 224, 224] and out[1]["depth"] == 18


def test_cli_table_csv_and_plot(capsys, tmp_path):
    path = tmp_path / "zoo.svg"
    assert cli.main(["compare", "lenet5", "alexnet", "--plot", str(path)]) == 0
    captured = capsys.readouterr()
    assert "alexnet" in captured.out and "wrote" in captured.err and "lenet5" in captured.err
    assert b"<svg" in path.read_bytes()
    assert cli.main(["compare", "alexnet", "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("name,family,year") and row.startswith("alexnet,alexnet,2012,imagenet,3x227x227,")


def test_cli_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert cli.main(["compare", "alexnet", "--plot", str(tmp_path / "zoo.png")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'cnnzoo[plot]'" in lines[0] and captured.out == ""
    assert os.listdir(tmp_path) == []


def test_cli_bad_extension(capsys, tmp_path):
    assert cli.main(["compare", "alexnet", "--plot", str(tmp_path / "zoo.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".png or .svg" in err


def test_cli_help_has_examples(capsys):
    assert cli.main(["compare", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


# The complexity chart -----------------------------------------------------------------------------------------

CHART = ["lenet5", "alexnet", "nin_imagenet", "googlenet", "resnet18"]


@pytest.fixture(scope="module")
def chart_rows():
    return compare(CHART)


def _chart_rows(names):
    """compare()'s rows for `names` without the depth, which the chart does not use (a third of the time)."""
    rows = []
    for name in names:
        card, result = cnnzoo.model_card(name), cnnzoo.profile(name)
        rows.append(CompareRow(name, card.family, card.year, card.dataset, card.input_size, result.params,
                               result.macs, result.activation_bytes, 0, card.top1_err, card.top5_err, card.err_source))
    return rows


@pytest.fixture(scope="module")
def lecture_rows():
    return _chart_rows(LECTURE_SELECTION)


def test_lecture_selection_is_registered_imagenet():
    # Canziani et al.'s chart: AlexNet, (BN-)NIN, GoogLeNet, Inception-v4, ResNet-18/34/50/101/152, VGG-16/19
    assert len(set(LECTURE_SELECTION)) == len(LECTURE_SELECTION) == 11
    assert all(cnnzoo.model_card(n).dataset == PLOT_DATASET for n in LECTURE_SELECTION)
    assert {n for n in LECTURE_SELECTION if n.startswith("resnet")} == {f"resnet{d}" for d in (18, 34, 50, 101, 152)}
    assert set(compare_module.__all__) >= {"LECTURE_SELECTION", "ChartPoint", "chart_points", "plot"}


def test_chart_points_top1_and_top5(chart_rows):
    top1 = {p.name: p for p in chart_points(chart_rows)}
    assert [p.name for p in chart_points(chart_rows)] == [r.name for r in chart_rows if r.name in top1]  # row order
    assert set(top1) == {"alexnet", "nin_imagenet", "googlenet", "resnet18"}  # lenet5: MNIST
    card = cnnzoo.model_card("googlenet")
    assert card.top1_err is None  # the paper reports top-5 only: the top-1 figure is another source's, marked so
    googlenet = top1["googlenet"]
    assert (googlenet.error, googlenet.metric, googlenet.paper_figure) == (card.other_top1_err, "top1", False)
    assert googlenet.error == pytest.approx(100 - 68.7) and "BVLC" in googlenet.error_source
    alexnet = top1["alexnet"]
    row = next(r for r in chart_rows if r.name == "alexnet")
    assert alexnet == ChartPoint("alexnet", "alexnet", row.params, row.macs, row.activation_bytes, 40.7, "top1",
                                 row.err_source, True)
    assert alexnet.accuracy == pytest.approx(59.3)
    assert not top1["nin_imagenet"].paper_figure  # the authors' model zoo release, not the paper

    top5 = {p.name: p for p in chart_points(chart_rows, metric="top5")}
    assert set(top5) == {"alexnet", "googlenet"}  # no top-5 for resnet18 (Table 2) or nin_imagenet
    assert (top5["googlenet"].error, top5["googlenet"].paper_figure) == (10.07, True)
    assert top5["googlenet"].error_source.startswith("Table 3")


def _card_row(name):
    """A CompareRow with the card's figures and no computed costs: which figure goes on the chart needs no profile."""
    card = cnnzoo.model_card(name)
    return CompareRow(name, card.family, card.year, card.dataset, card.input_size, 1, 1, 1, 1, card.top1_err,
                      card.top5_err, card.err_source)


def test_which_figures_are_not_the_papers():
    rows = [_card_row(n) for n in cnnzoo.list_models(dataset="imagenet")]
    top1 = {p.name for p in chart_points(rows) if not p.paper_figure}
    top5 = {p.name for p in chart_points(rows, metric="top5") if not p.paper_figure}
    # the cards whose source is a README or a model zoo release, and GoogLeNet's top-1 from BVLC's replication
    assert top1 == {"densenet161", "inception_resnet_v2_tf", "inception_v4_tf", "nin_imagenet", "googlenet"}
    assert top5 == {"inception_resnet_v2_tf", "inception_v4_tf"}
    with_other = [n for n in cnnzoo.list_models() if cnnzoo.model_card(n).other_top1_err is not None]
    assert with_other == ["googlenet"]


def test_other_top1_needs_a_source_and_no_paper_figure():
    card = cnnzoo.model_card("googlenet")
    with pytest.raises(ValueError, match="other_top1_source"):
        dataclasses.replace(card, other_top1_source="")
    with pytest.raises(ValueError, match="reports no top-1"):
        dataclasses.replace(card, top1_err=30.0)


def test_chart_arguments_are_checked(chart_rows, tmp_path):
    with pytest.raises(ValueError, match=r"unknown metric 'top3'; expected one of: top1, top5"):
        chart_points(chart_rows, metric="top3")
    with pytest.raises(ValueError, match="expected one of: top1, top5"):
        plot(chart_rows, tmp_path / "zoo.png", metric="accuracy")
    with pytest.raises(TypeError, match="CompareRow"):
        chart_points(chart_rows[0])
    with pytest.raises(TypeError, match="CompareRow"):
        plot(["alexnet"], tmp_path / "zoo.png")
    with pytest.raises(ValueError, match="nothing to plot: no ImageNet model with a reported top-5 error"):
        plot([r for r in chart_rows if r.name in ("lenet5", "resnet18")], tmp_path / "zoo.png", metric="top5")
    assert os.listdir(tmp_path) == []


def _drawn(rows, metric):
    """The chart's labels and bubbles as drawn: label boxes and circles in display pixels, from the artists."""
    from matplotlib.text import Text

    fig = chart_figure(rows, metric=metric)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    # the text's own box: an Annotation's get_window_extent also covers its leader line
    labels = {t.get_gid()[len("label-"):]: Text.get_window_extent(t, renderer) for t in ax.texts
              if (t.get_gid() or "").startswith("label-")}
    bubbles = {}
    for c in ax.collections:
        if (c.get_gid() or "").startswith("bubble-"):
            (x, y), = ax.transData.transform(c.get_offsets())
            radius = (c.get_sizes()[0] ** 0.5 + c.get_linewidths()[0]) / 2 * fig.dpi / 72
            bubbles[c.get_gid()[len("bubble-"):]] = (x, y, radius, c)
    return fig, ax, labels, bubbles


def _check_labels(rows, metric):
    fig, ax, labels, bubbles = _drawn(rows, metric)
    points = chart_points(rows, metric=metric)
    assert sorted(labels) == sorted(bubbles) == sorted(p.name for p in points)
    frame = ax.get_window_extent()
    names = sorted(labels)
    for i, a in enumerate(names):
        box = labels[a]
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, a
        for b in names[i + 1:]:
            assert not box.overlaps(labels[b]), f"labels {a} and {b} overlap"
        for b, (x, y, r, _) in bubbles.items():
            nearest_x, nearest_y = min(max(x, box.x0), box.x1), min(max(y, box.y0), box.y1)
            assert b == a or (nearest_x - x) ** 2 + (nearest_y - y) ** 2 > r ** 2, f"label {a} on bubble {b}"
    for p in points:  # a figure that is not the paper's is hollow
        face = bubbles[p.name][3].get_facecolors()
        assert (len(face) == 0 or face[0][3] == 0) == (not p.paper_figure), p.name
    return fig, ax, points


@pytest.mark.parametrize("metric", ["top1", "top5"])
def test_default_chart_labels_do_not_overlap(lecture_rows, metric):
    fig, ax, points = _check_labels(lecture_rows, metric)
    expected = set(LECTURE_SELECTION) - ({"resnet18", "nin_imagenet"} if metric == "top5" else set())
    assert {p.name for p in points} == expected  # googlenet on both: its top-1 from BVLC, hollow
    footnote = "\n".join(t.get_text() for t in fig.texts)
    if metric == "top1":
        assert "googlenet: BVLC's Caffe replication" in footnote and "Left off" not in footnote
    else:
        assert "Left off: no reported top-5 error: nin_imagenet, resnet18." in footnote


def test_all_chart_labels_do_not_overlap():
    rows = _chart_rows(cnnzoo.list_models(dataset="imagenet"))  # what `cnnzoo compare --plot FILE --all` charts
    for metric in ("top1", "top5"):
        fig, ax, points = _check_labels(rows, metric)
        reported = [r.name for r in rows if (r.top1_err if metric == "top1" else r.top5_err) is not None
                    or (metric == "top1" and cnnzoo.model_card(r.name).other_top1_err is not None)]
        assert [p.name for p in points] == reported and len(reported) >= 25
        footnote = "\n".join(t.get_text() for t in fig.texts)
        assert all(p.name in footnote for p in points if not p.paper_figure)


def test_legends_families_and_sizes_at_the_data_scale(lecture_rows):
    fig, ax, labels, bubbles = _drawn(lecture_rows, "top1")
    legends = {leg.get_title().get_text(): leg for leg in ax.findobj(lambda a: type(a).__name__ == "Legend")}
    families = [t.get_text() for t in legends["family"].get_texts()]
    assert families[:-1] == sorted({cnnzoo.model_card(n).family for n in LECTURE_SELECTION})
    assert families[-1].startswith("not the paper's figure")  # the hollow bubble's entry
    sizes = legends["parameters"]
    assert [t.get_text() for t in sizes.get_texts()] == ["5M", "25M", "100M"]
    for handle, params in zip(sizes.legend_handles, (5e6, 25e6, 100e6)):
        assert handle.get_markersize() ** 2 == pytest.approx(AREA_PER_MPARAM * params / 1e6)  # points^2, as bubbles
    for row in lecture_rows:
        assert bubbles[row.name][3].get_sizes()[0] == pytest.approx(AREA_PER_MPARAM * row.params / 1e6)


def test_cli_chart_selection(capsys, tmp_path, monkeypatch, chart_rows):
    """Without NAMES the chart shows the lecture's models (--all: every ImageNet one); the table lists every row."""
    charted = []
    monkeypatch.setattr(compare_module, "compare", lambda names, dataset: chart_rows)
    monkeypatch.setattr(compare_module, "plot",
                        lambda rows, path, metric: charted.append(([r.name for r in rows], metric)) or [])
    path = str(tmp_path / "zoo.png")
    assert cli.main(["compare", "--plot", path, "--format", "csv"]) == 0
    assert cli.main(["compare", "--plot", path, "--all", "--metric", "top5", "--format", "csv"]) == 0
    assert cli.main(["compare", "lenet5", "alexnet", "--plot", path, "--format", "csv"]) == 0
    lecture = [n for n in CHART if n in LECTURE_SELECTION]
    assert charted == [(lecture, "top1"), ([n for n in CHART if n != "lenet5"], "top5"), (CHART, "top1")]
    out = capsys.readouterr()
    assert out.out.count("lenet5,") == 3  # the table: every row
    assert "the lecture's chart's models" in out.err and "every ImageNet model" in out.err


@pytest.mark.parametrize("argv, message", [
    (["--all"], "--all chooses what the chart shows: give it with --plot"),
    (["--metric", "top5"], "--metric chooses what the chart shows"),
    (["alexnet", "--all", "--plot", "zoo.png"], "give either NAMES or --all"),
    (["--metric", "top3", "--plot", "zoo.png"], "invalid choice: 'top3'"),
])
def test_cli_chart_options_are_checked(capsys, argv, message):
    assert cli.main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_cli_top5_chart(capsys, tmp_path):
    path = tmp_path / "zoo.svg"
    assert cli.main(["compare", "googlenet", "resnet18", "--plot", str(path), "--metric", "top5"]) == 0
    err = capsys.readouterr().err
    assert "1 ImageNet model with a reported top-5 error" in err and "left off (1, " in err and "resnet18" in err
    svg = path.read_text()
    assert 'id="bubble-googlenet"' in svg and 'id="label-googlenet"' in svg and "bubble-resnet18" not in svg
