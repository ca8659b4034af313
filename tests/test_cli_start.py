"""The command starts quickly and stays right: `--help` without torch, `list`'s counts from a cache that is never
wrong, and the CLI's messages in the CLI's terms (flags, plurals, warnings)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cnnzoo import cli, count_params, create_model, list_models
from cnnzoo.analysis import counting
from cnnzoo.analysis.counting import registered_params
from cnnzoo.registry import (_MODELS, ModelCard, Paper, UnknownModelError, model_card, register_model,
                             registered_by_cnnzoo, suggest)
from cnnzoo.train.ensemble import tta_unseen
from cnnzoo.train.trainer import TrainConfig, train
from cnnzoo.words import plural

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

ALL = list_models()


def _imports_after(argv: list[str]) -> dict:
    """Run the `cnnzoo` entry point on argv in a fresh interpreter; which modules it imported, and its status."""
    code = ("import json, sys\n"
            "from cnnzoo.__main__ import main\n"
            f"sys.argv = ['cnnzoo', *{argv!r}]\n"
            "try:\n    status = main()\nexcept SystemExit as e:\n    status = e.code\n"
            "print(json.dumps({'status': status, 'modules': sorted(sys.modules)}), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return {**json.loads(result.stderr.strip().splitlines()[-1]), "stdout": result.stdout}


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["list", "--help"], ["info", "--help"],
                                  ["summary", "--help"], ["compare", "--help"], ["claims", "--help"],
                                  ["recipes", "--help"]])
def test_help_does_not_import_torch(argv):
    run = _imports_after(argv)
    assert run["status"] == 0 and "cnnzoo" in run["stdout"]
    assert "torch" not in run["modules"] and "cnnzoo.models" not in run["modules"]


def test_train_and_eval_flags_appear_in_their_help(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--threads" in capsys.readouterr().out
    assert cli.main(["eval", "--help"]) == 0
    assert "ten-crop" in capsys.readouterr().out
    assert cli.main(["recipes", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "cnnzoo's short schedule" in out and "the recipe its paper states" in out


def test_full_parser_has_every_subcommand_with_its_flags():
    parser = cli.build_parser()  # no argv: every subcommand gets its flags
    assert parser.parse_args(["eval", "a.pt", "--data", "fake", "--tta", "flip"]).tta == "flip"
    assert parser.parse_args(["list", "--dataset", "mnist"]).dataset == "mnist"


# --- parameter counts -------------------------------------------------------------------------------------------
def _meta_count(name):
    with torch.device("meta"):  # create_model as it is, initialisers included: the count `list` must equal
        return count_params(create_model(name))


@pytest.fixture
def no_table(monkeypatch, tmp_path):
    """As if the shipped table were stale: the cache and the builds answer."""
    monkeypatch.setattr(counting, "TABLE_FILE", tmp_path / "no-table.json")


def test_the_shipped_table_is_current_and_complete():
    shipped = counting._read_counts(counting.TABLE_FILE, counting._model_source_key())
    assert shipped, (f"{counting.TABLE_FILE} is stale (a model's source changed since it was written): run "
                     "`.venv/bin/python tools/write_params_table.py`")
    assert set(shipped) == {n for n in ALL if registered_by_cnnzoo(n)}


def test_the_table_key_covers_the_files_that_build_models():
    package = counting.TABLE_FILE.parent.parent.resolve()
    files = {p.relative_to(package).as_posix() for p in counting._model_files()}
    assert {"layers.py", "registry.py", "models/resnet.py", "models/fractalnet.py"} <= files
    assert "cli.py" not in files  # an edit outside the models leaves the table valid


def test_list_counts_equal_count_params_of_every_model(tmp_path, monkeypatch):
    """The registry-wide check: every count from the shipped table, and as `cnnzoo list` prints them on a fresh
    install (empty cache), equals count_params(create_model(name)); nothing is built or cached for them."""
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    expected = {name: _meta_count(name) for name in ALL}
    monkeypatch.setattr(counting, "_meta_count", lambda name: pytest.fail(f"{name} built despite the table"))
    assert registered_params(ALL) == expected
    result = subprocess.run([sys.executable, "-m", "cnnzoo", "list", "--format", "json"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "CNNZOO_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert {r["name"]: r["params"] for r in json.loads(result.stdout)} == expected
    assert os.listdir(tmp_path) == []


def test_without_the_table_counts_are_built_then_cached(tmp_path, monkeypatch, no_table):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    expected = {name: _meta_count(name) for name in ALL}
    assert registered_params(ALL) == expected
    assert (tmp_path / counting.CACHE_FILE).is_file() and os.listdir(tmp_path) == [counting.CACHE_FILE]
    monkeypatch.setattr(counting, "_meta_count", lambda name: pytest.fail(f"{name} rebuilt despite the cache"))
    assert registered_params(ALL) == expected


def test_a_stale_table_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    right = registered_params(["lenet5", "resnet20"])
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"key": counting._model_source_key(), "params": {"lenet5": 1, "resnet20": 2}}))
    monkeypatch.setattr(counting, "TABLE_FILE", table)
    assert registered_params(["lenet5", "resnet20"]) == {"lenet5": 1, "resnet20": 2}  # the table is read...
    monkeypatch.setattr(counting, "_model_source_key", lambda: "a model file was edited")
    assert registered_params(["lenet5", "resnet20"]) == right  # ...only while its key matches


def test_write_table_writes_what_registered_params_reads(tmp_path, monkeypatch):
    table = tmp_path / "table.json"
    monkeypatch.setattr("cnnzoo.registry.list_models", lambda: ["lenet5", "resnet20"])
    counts = counting.write_table(table)
    assert counts == {"lenet5": 60000, "resnet20": count_params(create_model("resnet20"))}
    assert json.loads(table.read_text()) == {"key": counting._model_source_key(), "params": counts}
    assert os.listdir(tmp_path) == ["table.json"]  # no temporary file left


@pytest.mark.parametrize("name", ["lenet5", "googlenet", "resnet20", "densenet40_k12", "squeezenet1_1"])
def test_list_counts_equal_real_models(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    assert registered_params([name])[name] == count_params(create_model(name))


SAMPLE = ["lenet5", "vgg11", "resnet20"]


def _cached(tmp_path) -> dict:
    return json.loads((tmp_path / counting.CACHE_FILE).read_text())


def test_a_cache_for_other_source_or_torch_is_not_used(tmp_path, monkeypatch, no_table):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    right = registered_params(SAMPLE)
    stale = {"key": "another source or torch version", "params": {n: 1 for n in SAMPLE}}
    (tmp_path / counting.CACHE_FILE).write_text(json.dumps(stale))
    assert registered_params(SAMPLE) == right
    assert _cached(tmp_path)["key"] == counting._source_key()  # rewritten for this source
    key = _cached(tmp_path)["key"]
    monkeypatch.setattr(counting, "_source_key", lambda: key[::-1])  # an edited file changes the key
    calls = []
    real = counting._meta_count
    monkeypatch.setattr(counting, "_meta_count", lambda n: calls.append(n) or real(n))
    assert registered_params(SAMPLE) == right and calls == SAMPLE


def test_the_key_covers_every_source_file_and_torch(tmp_path, monkeypatch):
    key = counting._source_key()
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert counting._source_key() != key


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": 1}', None])
def test_a_damaged_cache_is_recomputed(tmp_path, monkeypatch, content, no_table):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    right = registered_params(SAMPLE, cache=False)
    if content is None:  # the right key, but a count that is not a count
        content = json.dumps({"key": counting._source_key(), "params": {"lenet5": "60000", "vgg11": -1}})
    (tmp_path / counting.CACHE_FILE).write_text(content)
    assert registered_params(SAMPLE) == right
    assert _cached(tmp_path)["params"] == right


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch, no_table):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CNNZOO_CACHE", str(blocker / "cache"))  # a folder below a file: mkdir fails
    assert registered_params(["lenet5"]) == {"lenet5": 60000}


def test_a_model_registered_from_outside_is_always_computed(tmp_path, monkeypatch, no_table):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    monkeypatch.setattr("cnnzoo.registry._MODELS", dict(_MODELS))  # the registration is undone after the test
    paper = Paper(authors="A. Author", title="T", venue="V", year=2000, url="http://example.org")
    width = [4]
    register_model("_outside", ModelCard(family="test", paper=paper, dataset="mnist", input_size=(1, 8, 8)))(
        lambda num_classes=10, in_chans=1: nn.Linear(in_chans * 64, width[0]))
    assert registered_params(["_outside", "lenet5"]) == {"_outside": 64 * 4 + 4, "lenet5": 60000}
    assert "_outside" not in _cached(tmp_path)["params"]
    width[0] = 5  # its source changed where the cache's key cannot see
    assert registered_params(["_outside"]) == {"_outside": 64 * 5 + 5}


# --- names and messages -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed, first", [("lenet", ["lenet5", "lenet5_modern"]), ("resnet110_sdd", ["resnet110_sd"]),
                                          ("googlnet_bn", ["googlenet_bn"]), ("alexnt", ["alexnet"]),
                                          ("stochastic_depth", ["resnet110_sd", "resnet152_sd", "resnet1202_sd"])])
def test_suggestions_by_prefix_and_family_first(typed, first):
    assert suggest(typed)[:len(first)] == first


def test_suggestions_stay_in_the_family():
    assert set(suggest("lenet")) == {"lenet5", "lenet5_modern"}  # not alexnet, googlenet, resnet56
    assert set(suggest("vgg17")) <= {n for n in ALL if n.startswith("vgg")} and "vgg16" in suggest("vgg17")
    assert all(n.startswith("resnext") for n in suggest("resnext30"))
    assert suggest("xyzzy") == []


def test_unknown_model_advice_per_interface(capsys):
    with pytest.raises(UnknownModelError, match=r"'xyzzy'; list_models\(\) gives every name") as caught:
        model_card("xyzzy")
    assert caught.value.suggestions == []
    assert cli.main(["info", "xyzzy"]) == 2
    assert capsys.readouterr().err == "cnnzoo info: error: unknown model 'xyzzy'; `cnnzoo list` shows every name\n"
    assert cli.main(["info", "lenet"]) == 2
    assert "did you mean lenet5, lenet5_modern?" in capsys.readouterr().err


def test_measure_in_train_mode_names_the_flag(capsys):
    assert cli.main(["summary", "lenet5", "--mode", "train", "--measure"]) == 2
    err = capsys.readouterr().err
    assert "--mode eval" in err and "mode='eval'" not in err and err.count("\n") == 1


def test_missing_data_names_the_flag_only(tmp_path, capsys):
    assert cli.main(["train", "lenet5", "--data", "cifar10", "--data-root", str(tmp_path), "--threads", "1",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--download" in err and "load_dataset" not in err and err.count("\n") == 1


def test_plot_without_matplotlib_fails_before_computing(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    compare_module = sys.modules["cnnzoo.analysis.compare"]  # cnnzoo.analysis.compare is also the function
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: pytest.fail("computed before failing"))
    assert cli.main(["compare", "--plot", str(tmp_path / "zoo.png")]) == 2
    assert "pip install 'cnnzoo[plot]'" in capsys.readouterr().err


def test_plot_into_a_missing_folder_fails_before_computing(monkeypatch, tmp_path, capsys):
    compare_module = sys.modules["cnnzoo.analysis.compare"]
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: pytest.fail("computed before failing"))
    assert cli.main(["compare", "--plot", str(tmp_path / "no" / "zoo.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_counts_agree_with_their_nouns(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    assert plural(1, "epoch") == "1 epoch" and plural(1442, "image") == "1,442 images"
    assert plural(1, "class", "classes") == "1 class" and plural(2, "batch", "batches") == "2 batches"
    assert cli.main(["list", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "1 model\n" in out and "1 models" not in out


# --- checkpoints: when a snapshot was taken, and what test-time augmentation it never saw -------------------------
def test_snapshot_wording():
    base = dict(epochs_planned=30, batches_into_next_epoch=0, step=900, is_best=True)
    assert cli._snapshot({**base, "epochs_done": 20}) == \
        "the snapshot after epoch 20 of 30 (900 steps), the best validation error up to then"
    assert cli._snapshot({**base, "epochs_done": 30, "step": 1350}) == \
        "the end of training: all 30 epochs (1,350 steps), the run's best validation error"
    assert cli._snapshot({**base, "epochs_done": 1, "step": 1, "batches_into_next_epoch": 1, "is_best": False}) == \
        "the snapshot 1 batch into epoch 2 of 30 (1 step)"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """LeNet-5 on the fake data, 2 epochs of 16 steps planned, stopped after the first: best.pt is epoch 1 of 2."""
    out = tmp_path_factory.mktemp("stopped")
    train(TrainConfig(model="lenet5", data="fake", recipe="fast", epochs=2, batch_size=32, quiet=True, threads=1,
                      out=str(out), max_steps=16))
    return out


def test_info_says_which_snapshot_a_checkpoint_is(stopped_run, capsys):
    assert cli.main(["info", str(stopped_run / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "the snapshot after epoch 1 of 2 (16 steps), the best validation error up to then" in out
    assert cli.main(["info", str(stopped_run / "best.pt"), "--format", "json"]) == 0
    saved = json.loads(capsys.readouterr().out)["checkpoint"]
    assert saved["epochs_done"] == 1 and saved["epochs_planned"] == 2 and saved["step"] == 16


def test_tta_not_in_training_is_warned(stopped_run, capsys):
    assert tta_unseen("flip", ["crop_pad2"]) == ["mirrored images"]
    assert tta_unseen("flip", ["crop_pad4", "flip"]) == [] and tta_unseen("none", []) == []
    assert tta_unseen("ten-crop", []) == ["corner crops", "mirrored images"]
    assert tta_unseen("ten-crop", ["random_crop", "flip"]) == [] and tta_unseen("flip", None) == []
    checkpoint = str(stopped_run / "best.pt")  # the fast LeNet-5 recipe shifts (crop_pad2) and never flips
    assert cli.main(["eval", checkpoint, "--data", "fake", "--tta", "flip", "--format", "json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["members"][0]["tta_unseen"] == ["mirrored images"] and len(report["warnings"]) == 1
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnzoo eval: warning: --tta flip shows mirrored images")
    assert cli.main(["eval", checkpoint, "--data", "fake"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "128 images" in captured.out
