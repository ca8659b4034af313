"""The `cnnzoo` command, run as a user runs it: a subprocess, exit status, stdout and stderr."""

import json
import subprocess
import sys

import pytest

from cnnzoo import count_params, create_model, list_models, model_card


def cnnzoo(*args):
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=120)


def test_list_shows_every_model():
    result = cnnzoo("list")
    assert result.returncode == 0, result.stderr
    for name in list_models():
        assert f" {name} " in result.stdout


def test_list_json_has_computed_and_paper_params():
    result = cnnzoo("list", "vgg1?", "--format", "json")
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["vgg11", "vgg13", "vgg16", "vgg19"]
    for row in rows:
        assert row["params"] == count_params(create_model(row["name"]))
        assert row["paper_params"] == model_card(row["name"]).params


def test_list_csv_and_dataset_filter():
    result = cnnzoo("list", "--dataset", "imagenet", "--format", "csv")
    header, *lines = result.stdout.strip().splitlines()
    assert header.startswith("name,family,year")
    assert {line.split(",")[0] for line in lines} == set(list_models(dataset="imagenet"))


def test_info_shows_card_params_and_output_shape():
    result = cnnzoo("info", "vgg16")
    assert result.returncode == 0, result.stderr
    assert "138,357,544 computed" in result.stdout and "Table 2" in result.stdout
    assert "(1, 1000)" in result.stdout and "arXiv:1409.1556" in result.stdout


def test_info_json():
    info = json.loads(cnnzoo("info", "vgg11", "--format", "json").stdout)
    assert info["name"] == "vgg11" and info["computed"]["output_shape"] == [1, 1000]
    assert info["paper"]["arxiv"] == "1409.1556" and "dropout" in info["options"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "vgg17"], "unknown model 'vgg17'; did you mean"),
        (["list", "nothing*"], "no model matches"),
        (["lst"], "invalid choice"),
        (["list", "--dataset", "svhn2"], "invalid choice"),
        (["info"], "required"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, message):
    result = cnnzoo(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["list"], ["info"], ["summary"], ["compare"], ["claims"]])
def test_every_command_has_help_with_an_example(command):
    result = cnnzoo(*command, "--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "cnnzoo " in result.stdout


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("cnnzoo") or str(__import__("pathlib").Path(sys.executable).with_name("cnnzoo"))
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("cnnzoo ")
