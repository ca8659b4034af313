"""Diagrams drawn from the trace: every registered model, and the papers' figures' facts (block counts per stage,
branches per inception module, shortcuts, dense layers) read back from the drawing."""

import xml.etree.ElementTree as ET

import pytest

import cnnzoo
from cnnzoo.report.diagram import diagram

SVG = "{http://www.w3.org/2000/svg}"


def walk(item, depth=0):
    yield item, depth
    for child in item.items:
        yield from walk(child, depth + 1)


def boxes(d):
    return [it for it, _ in walk(d.root) if it.kind == "box"]


def groups_of(d, type_name):
    return [it for it, _ in walk(d.root) if it.kind == "group" and it.title.endswith(f"· {type_name}")]


@pytest.mark.parametrize("name", cnnzoo.list_models())
def test_every_model_is_drawn_whole(name):
    d = diagram(name)
    assert d.blocks > 0
    root = ET.fromstring(d.svg())
    top = [g for g in root.iter(f"{SVG}g") if g.get("data-level") == "0"]
    assert len(top) == d.blocks == int(root.get("data-blocks"))
    # Every node of the pass is in exactly one box, except the no-ops the drawing leaves out.
    drawn = [n.index for b in boxes(d) for n in b.nodes]
    assert len(drawn) == len(set(drawn))
    t = d.trace  # the eval pass, or the training pass where weights run only in training (GoogLeNet's aux heads)
    assert t.mode == d.mode and t.model == name
    expected = {n.index for n in t.graph_nodes() if n.kind != "input" and n.type not in ("Identity", "Flatten")}
    assert {n.index for n in d.root.nodes} == expected
    assert all(b.label for b in boxes(d))


def test_vgg16_every_layer_as_the_paper_lists_it():
    d = diagram("vgg16", depth="max")
    labels = [b.label for b in boxes(d)]
    convs = [x for x in labels if x.startswith("3x3 conv")]
    assert len(convs) == 13  # Simonyan & Zisserman, Table 1, column D
    assert [x for x in labels if x.startswith("fc")] == ["fc 4096", "fc 4096", "fc 1000"]
    assert sum(x.startswith("2x2 max pool, /2") for x in labels) == 5
    widths = [int(x.split(", ")[1]) for x in convs]
    assert widths == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6


def test_resnet34_stages_repeat_as_in_table_1():
    d = diagram("resnet34")
    blocks = {}
    for it, _ in walk(d.root):
        if it.kind == "group" and it.title.endswith("BasicBlock"):
            stage = it.path.split(".")[0]
            blocks[stage] = blocks.get(stage, 0) + it.repeat
    assert blocks == {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}  # He et al. 2016, Table 1
    svg = d.svg()
    # Three projection shortcuts (dotted), drawn where the stage changes width; the other 13 are identity arcs.
    root = ET.fromstring(svg)
    dotted = [p for p in root.iter(f"{SVG}polyline") if p.get("stroke-dasharray")]
    assert len(dotted) == 3
    assert "3x3 conv, 128, /2" in svg and "1x1 conv, 128, /2" in svg


def test_googlenet_inception_modules_have_four_branches_and_aux_heads():
    d = diagram("googlenet")
    modules = groups_of(d, "Inception")
    assert len(modules) == 9  # 3a, 3b, 4a-4e, 5a, 5b (Szegedy et al. 2015, Table 1)
    for m in modules:
        first_row = m.rows[0][0]
        assert len(first_row) == 4
        assert m.items[-1].label == "concat"
    assert len(groups_of(d, "InceptionAux")) == 2


def test_densenet121_dense_blocks_hold_the_papers_layer_counts():
    d = diagram("densenet121", depth="max")
    counts = []
    for block in groups_of(d, "DenseBlock"):
        counts.append(sum(it.repeat for it in block.items if it.kind == "group" or it.module))
    assert counts == [6, 12, 24, 16]  # Huang et al. 2017, Table 1
    d = diagram("densenet121")  # the default keeps dense connectivity visible: arcs from earlier layers
    block = groups_of(d, "DenseBlock")[0]
    sources = {}
    for s, t in block.edges:
        sources.setdefault(t, set()).add(s)
    assert max(len(v) for v in sources.values()) >= 3


def test_squeezenet_fire_modules_expand_side_by_side():
    d = diagram("squeezenet1_0")
    fires = groups_of(d, "Fire")
    assert sum(f.repeat for f in fires) == 8  # Iandola et al. 2016, Table 1: fire2-fire9 (equal ones collapse)
    for fire in fires:
        widths = [len(members) for members, _, _ in fire.rows]
        assert widths[:3] == [1, 2, 1]  # squeeze, then 1x1 and 3x3 expands in one row, then concat


def test_layout_is_deterministic_and_text_stays_text():
    a, b = diagram("resnet18").svg(), diagram("resnet18").svg()
    assert a == b
    texts = [t.text or "".join(s.text or "" for s in t) for t in ET.fromstring(a).iter(f"{SVG}text")]
    assert any(t.startswith("3x3 conv, 64") for t in texts)


def test_depth_chooses_the_level():
    one = diagram("resnet50", depth=1)
    assert all(it.kind == "box" for it in one.root.items)
    assert any("layer" in it.path and it.module for it in one.root.items)
    full = diagram("resnet50", depth="max")
    assert len(boxes(full)) > len(boxes(diagram("resnet50"))) > len(boxes(one))
    assert all(b.repeat == 1 for b in boxes(full))


def test_annotations():
    d = diagram("alexnet", annotate=("shape", "params", "macs", "rf"))
    first = boxes(d)[0]
    assert "96x55x55" in first.note and "params" in first.note and "MACs" in first.note and "rf 11" in first.note
    with pytest.raises(ValueError, match="unknown annotation 'colour'"):
        diagram("alexnet", annotate=("colour",))
    with pytest.raises(ValueError, match="depth must be"):
        diagram("alexnet", depth=0)


@pytest.mark.parametrize("suffix,magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_save_writes_each_format_and_nothing_else(tmp_path, suffix, magic):
    pytest.importorskip("matplotlib") if suffix != ".svg" else None
    path = diagram("lenet5").save(tmp_path / f"lenet5{suffix}")
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"lenet5{suffix}"]


def test_save_refuses_unknown_formats_and_missing_folders(tmp_path):
    d = diagram("lenet5")
    with pytest.raises(ValueError, match=r"must end in \.svg, \.png, \.pdf"):
        d.save(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        d.save(tmp_path / "missing" / "x.svg")


def test_cli_writes_the_figure_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from cnnzoo.cli import main

    out = tmp_path / "r18.svg"
    assert main(["diagram", "resnet18", "--out", str(out)]) == 0
    assert "8 top-level blocks" in capsys.readouterr().out and out.read_text().startswith("<?xml")
    for argv, message in [(["resnt18", "--out", str(out)], "did you mean resnet18"),
                          (["resnet18", "--out", str(tmp_path / "x.gif")], "--out must end in"),
                          (["resnet18", "--out", str(out), "--depth", "0"], "positive level or 'max'"),
                          (["resnet18", "--out", str(out), "--annotate", "size"], "unknown annotation")]:
        assert main(["diagram", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
