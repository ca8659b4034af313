"""Checkpoints: atomic writes, refusal of anything that is not a cnnzoo checkpoint, clear mismatch messages."""

import os
import pickle

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.train.checkpoint import (CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint)


def _payload(name="lenet5", **options):
    model = create_model(name, **options)
    return model, {"model": name, "model_options": options, "model_state": model.state_dict()}


def test_round_trip_builds_the_same_model(tmp_path):
    model, payload = _payload("lenet5", num_classes=7)
    save_checkpoint(tmp_path / "a.pt", payload)
    loaded = model_from_checkpoint(tmp_path / "a.pt")
    assert not loaded.training
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    _, payload = _payload()
    save_checkpoint(tmp_path / "last.pt", payload)
    before = (tmp_path / "last.pt").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last.pt", {**payload, "step": 5})
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


class Payload:  # an arbitrary class: unpickling it could run code
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_arbitrary_pickles_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cnnzoo-checkpoint", "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    (lambda p: torch.save(create_model("lenet5").state_dict(), p), "a plain state_dict"),
    (lambda p: torch.save([1, 2, 3], p), "a list"),
    (lambda p: p.write_bytes(b"not a checkpoint at all"), "not a PyTorch checkpoint"),
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "not a PyTorch checkpoint"),
])
def test_other_files_are_not_cnnzoo_checkpoints(tmp_path, content, message):
    path = tmp_path / "x.pt"
    content(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    _, payload = _payload()
    save_checkpoint(tmp_path / "a.pt", payload)
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "a.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "a.pt")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    _, payload = _payload("lenet5")
    payload = {**payload, "model": "lenet5_modern"}  # the file claims another architecture
    save_checkpoint(tmp_path / "a.pt", payload)
    with pytest.raises(CheckpointError, match=r"does not fit lenet5_modern: (missing|unexpected|shape differs)"):
        model_from_checkpoint(tmp_path / "a.pt")


def test_shape_mismatch_is_named(tmp_path):
    _, payload = _payload("lenet5", num_classes=10)
    payload = {**payload, "model_options": {"num_classes": 12}}
    save_checkpoint(tmp_path / "a.pt", payload)
    with pytest.raises(CheckpointError, match=r"shape differs: .*\(10, 84\) vs \(12, 84\)"):
        model_from_checkpoint(tmp_path / "a.pt")


def test_atomic_writes_make_ordinary_files(tmp_path):
    """mkstemp creates 0600; a chart, a CSV or a checkpoint is an ordinary file: 0666 less the umask."""
    import os

    from cnnzoo.train.checkpoint import atomic_write_text

    mask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.csv", "x\n")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o640
