"""Training and evaluation that never lie: one test per way a run could give a wrong result silently, lose work,
fail on ordinary input, or end in a traceback. Through the CLI where a user meets it; subprocesses for signals,
locks and kills."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnzoo import create_model
from cnnzoo.cli import main
from cnnzoo.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cnnzoo.train.health import Health, TrainingDiverged
from cnnzoo.train.trainer import TrainConfig, train

SMALL = dict(model="lenet5", data="fake", recipe="fast", epochs=2, batch_size=32, quiet=True, threads=1)


def _args(out, *more) -> list[str]:
    return ["train", "lenet5", "--data", "fake", "--recipe", "fast", "--epochs", "2", "--batch-size", "32",
            "--threads", "1", "--out", str(out), "--quiet", *more]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _cli(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cnnzoo", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train(TrainConfig(**SMALL, out=str(out)))
    return out / "last.pt"


# --- 1-2: no poisoned checkpoint, no silent divergence ------------------------------------------------------------
def test_a_loss_that_turns_nan_names_a_checkpoint_that_is_really_good(tmp_path, capsys):
    """resnet20 at lr 1e6: a finite loss makes non-finite weights; nothing non-finite may reach the disk."""
    out = tmp_path / "run"
    code = main(["train", "resnet20", "--data", "fake", "--recipe", "fast", "--lr", "1e6", "--save-every", "1",
                 "--out", str(out), "--quiet"])
    line = _one_line(capsys)
    assert code == 1 and "try a lower --lr" in line, line
    if "No checkpoint was written" not in line:
        named = Path(line.split("The last good checkpoint is ")[1].split(" (step")[0])
        payload = load_checkpoint(named)  # refuses NaN/inf in the weights or the optimizer state
        assert all(torch.isfinite(t).all() for t in payload["model_state"].values() if t.is_floating_point())
        assert main(["eval", str(named), "--data", "fake"]) == 0
    for path in out.glob("*.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("model, lr", [("lenet5", "3"), ("lenet5", "1e6"), ("lenet5_modern", "100")])
def test_finite_divergence_stops_with_one_line(tmp_path, capsys, model, lr):
    out = tmp_path / "run"
    code = main(["train", model, "--data", "digits", "--recipe", "fast", "--epochs", "4", "--lr", lr,
                 "--save-every", "5", "--out", str(out), "--quiet"])
    line = _one_line(capsys)
    assert code == 1 and "diverged" in line and "starting level" in line, line
    if (out / "last.pt").exists():  # only a checkpoint from before the loss ran away is kept
        payload = load_checkpoint(out / "last.pt")
        assert payload["health"]["start"] is not None
        assert max(payload["health"]["recent"]) <= 5 * payload["health"]["start"]


def test_health_tolerates_spikes_and_resumes_its_judgement():
    start = 2.3
    health = Health(num_classes=10, window=10)
    for loss in [start, 2.2, 9.0, 2.0, 1.9, 12.0, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3]:  # two spikes: still learning
        health.check(loss, "here", "")
    assert not health.healthy  # a spike is in the window: a save now would be deferred
    for _ in range(10):
        health.check(1.0, "here", "")
    assert health.healthy
    copy = Health(num_classes=10, window=10)
    copy.load_state_dict(health.state_dict())
    for h in (health, copy):
        with pytest.raises(TrainingDiverged, match="diverged"):
            for _ in range(10):
                h.check(100.0, "step 30", "")
    with pytest.raises(TrainingDiverged, match="the loss became nan"):
        Health(num_classes=10).check(float("nan"), "step 1", "")


# --- 3, 13, 14: checkpoints are checked whole on load ------------------------------------------------------------
def test_flipped_bytes_nan_weights_and_wrong_dtypes_are_refused(trained, tmp_path, capsys):
    data = bytearray(trained.read_bytes())
    with zipfile.ZipFile(trained) as archive:
        biggest = max(archive.infolist(), key=lambda i: i.file_size)
    start = biggest.header_offset + 30 + len(biggest.filename.encode()) + len(biggest.extra) + 64
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    assert main(["eval", str(tmp_path / "flipped.pt"), "--data", "fake"]) == 2
    assert "damaged" in _one_line(capsys)

    payload = load_checkpoint(trained)
    state = dict(payload["model_state"])
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("nan"))
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(tmp_path / "nan.pt", {**payload, "model_state": state})  # never written...
    torch.save({**payload, "model_state": state}, tmp_path / "nan.pt")  # ...and refused if made another way
    assert main(["eval", str(tmp_path / "nan.pt"), "--data", "fake"]) == 2
    assert "not finite" in _one_line(capsys)

    doubles = {k: v.double() if v.is_floating_point() else v for k, v in payload["model_state"].items()}
    save_checkpoint(tmp_path / "double.pt", {**payload, "model_state": doubles})
    assert main(["eval", str(tmp_path / "double.pt"), "--data", "fake"]) == 2
    assert "dtype differs" in _one_line(capsys)


@pytest.mark.parametrize("change, field", [
    ({"model_options": [1, 2]}, "model_options"),
    ({"version": "1"}, "version"),
    ({"model_state": "weights"}, "model_state"),
    ({"history": "none"}, "history"),
    ({"position": [1, "a"]}, "position"),
    ({"model_state": None}, "model_state"),
])
def test_crafted_checkpoints_name_the_bad_field(trained, tmp_path, capsys, change, field):
    payload = {**load_checkpoint(trained), **change}
    torch.save(payload, tmp_path / "crafted.pt")
    for args in (["eval", str(tmp_path / "crafted.pt"), "--data", "fake"], ["info", str(tmp_path / "crafted.pt")],
                 ["summary", str(tmp_path / "crafted.pt")]):
        assert main(args) == 2
        line = _one_line(capsys)
        assert f"field {field!r}" in line, line
    missing = {k: v for k, v in load_checkpoint(trained).items() if k != "model_state"}
    torch.save(missing, tmp_path / "missing.pt")
    assert main(["eval", str(tmp_path / "missing.pt"), "--data", "fake"]) == 2
    assert "field 'model_state' is missing" in _one_line(capsys)


def test_an_unreadable_checkpoint_is_a_permission_problem(trained, tmp_path):
    """Mode 000: root reads any file, so as root the reading process first becomes nobody."""
    folder = Path(os.path.realpath("/tmp")) / f"cnnzoo-perm-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    try:
        folder.chmod(0o755)
        shutil.copy(trained, folder / "last.pt")
        (folder / "last.pt").chmod(0)
        script = textwrap.dedent(f"""
            import os, sys
            from cnnzoo.train.checkpoint import load_checkpoint, CheckpointError
            if os.geteuid() == 0:
                os.setgid(65534); os.setuid(65534)
            try:
                load_checkpoint({str(folder / 'last.pt')!r})
            except CheckpointError as err:
                print(err)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert "permission denied" in done.stdout and "truncated" not in done.stdout, done
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- 4-5: settings that would be silently ignored -----------------------------------------------------------------
@pytest.mark.parametrize("setting", ["dropout=0.3", "survival_prob=0.5"])
def test_a_model_option_the_model_lacks_is_refused(tmp_path, capsys, monkeypatch, setting):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "lenet5", "--data", "fake", "--set", setting, "--quiet"]) == 2
    line = _one_line(capsys)
    assert f"lenet5 has no option {setting.split('=')[0]}" in line and "options of its own" in line
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_explicit_flags_that_differ_even_when_they_are_defaults(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*_args(out), "--seed", "7", "--max-steps", "3"]) == 0
    for flags, name in ((["--recipe", "paper"], "recipe"), (["--seed", "0"], "seed")):
        assert main(["train", "lenet5", "--data", "fake", "--out", str(out), "--resume", "--quiet", *flags]) == 2
        assert f"these settings differ: {name}" in _one_line(capsys)
    assert main(["train", "lenet5", "--data", "fake", "--out", str(out), "--resume", "--quiet", "--seed", "7"]) == 0


# --- 6, 10-12: image folders -----------------------------------------------------------------------------------------
def _pictures(root: Path, modes=("RGB",), per_class=4, size=(9, 7)) -> str:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for k, label in enumerate(("ant", "bee")):
            (root / split / label).mkdir(parents=True)
            for i in range(per_class):
                mode = modes[(i + k) % len(modes)]
                pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
                image = Image.fromarray(pixels, "RGB")
                if mode == "I;16":  # 16-bit grey PNG
                    image = Image.fromarray(pixels[..., 0].astype("uint16") * 257)
                    image.save(root / split / label / f"{i}.png")
                elif mode == "webp":
                    image.save(root / split / label / f"{i}.webp")
                else:
                    image.convert(mode).save(root / split / label / f"{i}.png")
    return f"imagefolder:{root}"


@pytest.mark.parametrize("model, recipe", [("lenet5", "fast"), ("resnet20", "fast"), ("resnet20", "paper")])
def test_an_image_folder_trains_with_the_default_recipe(tmp_path, capsys, model, recipe):
    data = _pictures(tmp_path / "pics", modes=("RGB", "I;16", "webp", "L", "P", "RGBA"))
    out = tmp_path / "run"
    code = main(["train", model, "--data", data, "--recipe", recipe, "--epochs", "1", "--batch-size", "4",
                 "--workers", "0", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["step"] == 2


def test_an_empty_class_folder_is_refused_and_leaves_no_run_folder(tmp_path, capsys):
    data = _pictures(tmp_path / "pics")
    (tmp_path / "pics" / "train" / "cow").mkdir()
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--data", data, "--recipe", "fast", "--out", str(out), "--quiet"]) == 2
    assert "cow" in _one_line(capsys)
    assert not out.exists()


def test_a_corrupt_image_is_named_or_skipped(tmp_path, capsys):
    data = _pictures(tmp_path / "pics")
    bad = tmp_path / "pics" / "train" / "bee" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "run"
    args = ["train", "lenet5", "--data", data, "--recipe", "fast", "--epochs", "2", "--batch-size", "3",
            "--workers", "1", "--out", str(out), "--quiet"]
    assert main(args) == 2
    line = _one_line(capsys)
    assert str(bad) in line and "--skip-bad-images" in line, line
    assert not out.exists()  # the run failed before its first checkpoint: a half-made folder is not left
    assert main([*args, "--skip-bad-images"]) == 0, capsys.readouterr().err
    assert (out / "skipped_images.txt").read_text().split() == [str(bad)]


# --- 7-9, 15: the run folder ----------------------------------------------------------------------------------------------
def test_a_second_trainer_on_one_folder_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    first = _cli([*_args(out), "--epochs", "40", "--save-every", "2"], tmp_path)
    try:
        _wait_for(out / "last.pt", first)
        for extra in ((), ("--resume",)):
            second = subprocess.run([sys.executable, "-m", "cnnzoo", *_args(out), *extra], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120)
            err = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(err) == 1, second.stderr
            assert f"in use by another cnnzoo train (pid {first.pid})" in err[0], err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 40  # still the first run's


def test_a_killed_runs_lock_and_temporary_files_do_not_stop_a_resume(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _cli([*_args(out), "--epochs", "40", "--save-every", "2"], tmp_path)
    _wait_for(out / "last.pt", proc)
    proc.kill()
    proc.communicate(timeout=60)
    for name in (".last.pt.k1ll3d.tmp", ".metrics.csv.x9y8.tmp"):
        (out / name).write_bytes(b"left by a writer that died")
    assert (out / ".lock").exists()
    assert main(["train", "lenet5", "--data", "fake", "--out", str(out), "--resume", "--quiet",
                 "--max-steps", str(load_checkpoint(out / "last.pt")["step"] + 1)]) == 0
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("signals, status", [(["SIGHUP"], {129}), (["SIGTERM", "SIGINT"], {143, 130})])
def test_hangup_and_a_second_signal_still_save(tmp_path, signals, status):
    """A second signal 20 ms after the first does not abandon the save (it may end the process once the save
    is done, hence 130 as well as 143)."""
    out = tmp_path / "run"
    args = [a for a in _args(out) if a != "--quiet"]
    proc = _cli([*args, "--epochs", "40", "--save-every", "4"], tmp_path)
    _wait_for(out / "last.pt", proc)
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.02)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode in status and "Traceback" not in err, err
    stopped = [line for line in stdout.splitlines() if line.startswith(f"stopped by {signals[0]} at step")]
    assert stopped and "; saved " in stopped[0], stdout
    saved = load_checkpoint(out / "last.pt")
    assert stopped[0].startswith(f"stopped by {signals[0]} at step {saved['step']};")
    assert main(["train", "lenet5", "--data", "fake", "--out", str(out), "--resume", "--quiet",
                 "--max-steps", str(saved["step"] + 1)]) == 0


def _immutable(path: Path, on: bool) -> bool:
    """Make a folder unwritable even for root (chattr +i); False where the file system cannot."""
    if os.geteuid() != 0:
        path.chmod(0o555 if on else 0o755)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def test_an_unwritable_run_folder_is_found_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*_args(out), "--max-steps", "2"]) == 0
    if not _immutable(out, True):
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    try:
        started = time.perf_counter()
        assert main(["train", "lenet5", "--data", "fake", "--out", str(out), "--resume", "--quiet"]) == 2
        line = _one_line(capsys)
        assert "not writable" in line and str(out) in line, line
        assert time.perf_counter() - started < 30
    finally:
        _immutable(out, False)
    assert load_checkpoint(out / "last.pt")["step"] == 2  # untouched


# --- 13: no traceback for absurd numbers or a Ctrl-C at start-up --------------------------------------------------
def test_absurd_numbers_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "lenet5", "--data", "fake", "--seed", "9223372036854775808", "--quiet"]) == 2
    assert "--seed" in _one_line(capsys)
    assert main(["train", "lenet5", "--data", "fake:3x100000x100000", "--quiet"]) == 2
    _one_line(capsys)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="seed must be an integer"):
        train(TrainConfig(**{**SMALL, "seed": 2**64}, out=str(tmp_path / "api")))


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_ctrl_c_during_start_up_is_one_line(tmp_path, delay):
    proc = _cli(["train", "resnet20", "--data", "fake", "--recipe", "fast", "--out", tmp_path / "run", "--quiet"],
                tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) <= 1, err


@pytest.mark.parametrize("setting, shown", [("foo=1", "settable: optimizer, lr"), ("name=x", "settable: optimizer"),
                                            ("schedule.foo=1", "schedule.kind")])
def test_set_names_only_what_can_be_set(tmp_path, capsys, monkeypatch, setting, shown):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "lenet5", "--data", "fake", "--set", setting, "--quiet"]) == 2
    line = _one_line(capsys)
    assert shown in line and "notes" not in line and "source" not in line, line
