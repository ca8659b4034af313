"""`compare` rows against independent counts, its sorting and filtering, the chart files, and `cnnzoo compare`."""

import json
import os
import sys

import pytest
import torch

import cnnzoo
from cnnzoo import cli
from cnnzoo.analysis.compare import CompareRow, compare, plot, weight_depth

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
