"""`cnnzoo predict`: the weights' own preprocessing and class names, top-k probabilities, folders streamed with bad
files listed and skipped, checkpoints with their dataset's classes. The weights are written here (never fetched)."""

import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnzoo import create_model
from cnnzoo.cli import main
from cnnzoo.train.checkpoint import save_checkpoint
from cnnzoo.weights import Preprocess, hub_file, list_weights
from helpers import with_running_statistics


@pytest.fixture
def squeezenet(tmp_path, monkeypatch):
    """torchvision's SqueezeNet 1.1 with random weights, saved where torch.hub keeps its download; no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline (test)")))
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1().eval()
    path = hub_file(list_weights("squeezenet1_1")[0].url)
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    return model


def _image(path, h=180, w=240, seed=0):
    rng = np.random.default_rng(seed)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(rng.random((1, 3, 12, 16))).float(), size=(h, w),
                                             mode="bilinear")[0]
    Image.fromarray((smooth.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return path


def _predict(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_top_k_with_the_weights_preprocessing_and_imagenet_names(tmp_path, squeezenet, capsys):
    image = _image(tmp_path / "smooth.png")
    code, out, _ = _predict(capsys, "squeezenet1_1", image, "--topk", 3, "--format", "json")
    assert code == 0
    report = json.loads(out)
    top = report["predictions"][0]["top"]
    weights = torchvision.models.SqueezeNet1_1_Weights.DEFAULT
    with torch.no_grad():  # torchvision's own pipeline: its transforms on the decoded image, its model
        reference = squeezenet(weights.transforms()(Image.open(image).convert("RGB"))[None]).softmax(1)[0]
    assert [t["class"] for t in top] == [weights.meta["categories"][t["index"]] for t in top]
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    for t in top:  # our resize is torch's on floats, torchvision's on PIL: pixels may differ by one level
        assert t["probability"] == pytest.approx(reference[t["index"]].item(), abs=0.02)
    assert report["weights"] == weights.name and report["preprocess"]["resize"] == 256


def test_folder_streams_in_batches_and_skips_unreadable_files(tmp_path, squeezenet, capsys, monkeypatch):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    good = [_image(folder / "sub" / f"{i}.png", seed=i) for i in range(3)] + [_image(folder / "a.jpg", seed=9)]
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image: not even looked at")
    code, out, err = _predict(capsys, "squeezenet1_1", folder, "--batch", 2, "--topk", 1, "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert sorted(p["image"] for p in report["predictions"]) == sorted(map(str, good))
    assert [s["image"] for s in report["skipped"]] == [str(folder / "broken.jpg")]
    monkeypatch.setenv("COLUMNS", "300")  # the table on one line per row
    code, out, err = _predict(capsys, "squeezenet1_1", folder, "--topk", 2)
    assert code == 0 and "skipped" in err and str(folder / "broken.jpg") in err
    rows = [line for line in out.splitlines() if str(folder) in line]
    assert len(rows) == 4 and all("│    1 │" in row for row in rows)
    code, out, err = _predict(capsys, "squeezenet1_1", folder / "broken.jpg")
    assert code == 1 and "cannot decode" in err


def test_batches_and_flips_do_not_change_a_prediction(tmp_path, squeezenet, capsys):
    images = [_image(tmp_path / f"{i}.png", h=150 + 20 * i, seed=i) for i in range(3)]
    one = [json.loads(_predict(capsys, "squeezenet1_1", im, "--format", "json")[1])["predictions"][0]
           for im in images]
    together = json.loads(_predict(capsys, "squeezenet1_1", *images, "--batch", 3, "--format", "json")[1])
    for a, b in zip(one, together["predictions"]):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]], abs=1e-5)
    flipped = json.loads(_predict(capsys, "squeezenet1_1", images[0], "--tta", "flip", "--format", "json")[1])
    assert flipped["tta"] == "flip" and len(flipped["predictions"][0]["top"]) == 5


def test_ten_crop_views_are_torchvisions():
    from torchvision.transforms.v2.functional import ten_crop

    p = Preprocess(resize=40, crop=32)
    image = (torch.rand(3, 50, 70) * 255).to(torch.uint8)
    views = p.views(image, "ten-crop")
    expected = p.normalise(torch.stack(ten_crop(p.resized(image), [32])))
    assert views.shape == (10, 3, 32, 32) and torch.equal(views, expected)
    flip = p.views(image, "flip")
    assert torch.equal(flip[0], views[4]) and torch.equal(flip[1], views[9])


def test_checkpoint_uses_its_class_names_and_statistics(tmp_path, capsys):
    x = torch.randn(2, 3, 32, 32)
    model = with_running_statistics(create_model("resnet20", num_classes=3), x)
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {"model": "resnet20", "model_options": {"num_classes": 3},
                                 "model_state": model.state_dict(), "classes": ["cat", "dog", "fox"],
                                 "data": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
                                          "input_size": [3, 32, 32]}})
    image = _image(tmp_path / "small.png", h=32, w=32)
    code, out, _ = _predict(capsys, checkpoint, image, "--format", "json")
    assert code == 0
    top = json.loads(out)["predictions"][0]["top"]
    assert len(top) == 3 and {t["class"] for t in top} == {"cat", "dog", "fox"}  # --topk 5 capped at 3 classes
    pixels = torch.from_numpy(np.array(Image.open(image))).permute(2, 0, 1).float() / 255
    x = (pixels - torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    with torch.no_grad():
        expected = model(x[None]).softmax(1)[0]
    assert top[0]["probability"] == pytest.approx(expected.max().item(), abs=1e-5)
    code, _, err = _predict(capsys, checkpoint, image, "--weights", "IMAGENET1K_V1")
    assert code == 2 and "--weights is for a model name" in err


def test_usage_errors_are_one_line(tmp_path, squeezenet, capsys):
    code, _, err = _predict(capsys, "squeezenet1_1", tmp_path / "missing.jpg")
    assert code == 2 and "no image or folder" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, _, err = _predict(capsys, "squeezenet1_1", tmp_path / "empty")
    assert code == 2 and "no image files" in err
    code, _, err = _predict(capsys, "squeezenet1_1", _image(tmp_path / "a.png"), "--weights", "IMAGENET1K_V9")
    assert code == 2 and "IMAGENET1K_V1" in err


def test_threads_are_the_free_cores_unless_pinned_and_the_callers_count_comes_back(tmp_path, squeezenet, capsys,
                                                                                   monkeypatch):
    """A busy core makes torch's default of one thread per core many times slower, so predict runs on the free
    cores (or --threads), and gives the caller's count back."""
    import cnnzoo.train.threads as threads

    seen = []
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real_set(n)))
    before = torch.get_num_threads()
    image = _image(tmp_path / "a.png")
    assert _predict(capsys, "squeezenet1_1", image)[0] == 0
    assert seen == [1, before] and torch.get_num_threads() == before
    seen.clear()
    assert _predict(capsys, "squeezenet1_1", image, "--threads", "2")[0] == 0
    assert seen == [2, before]
    code, _, err = _predict(capsys, "squeezenet1_1", image, "--threads", "0")
    assert code == 2 and "--threads" in err
