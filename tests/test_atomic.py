"""All-or-nothing writes: an interrupt at any point leaves the old target and no stray file."""

import builtins
import os

import numpy as np
import pytest

import icam.atomic
from icam.atomic import atomic_write
from icam.data.voc import load_mask, save_mask
from icam.inference import save_cam


def test_a_write_replaces_the_target_and_leaves_only_it(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_write(target, "w") as f:
        f.write("one")
    with atomic_write(target, "w") as f:
        f.write("two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path / "sub") == ["a.txt"]


def test_an_interrupt_while_the_temporary_file_is_created_leaves_nothing(tmp_path, monkeypatch):
    def open_then_interrupt(*args, **kwargs):
        builtins.open(*args, **kwargs).close()  # the file exists, then the interrupt lands
        raise KeyboardInterrupt

    monkeypatch.setattr(icam.atomic, "open", open_then_interrupt, raising=False)
    with pytest.raises(KeyboardInterrupt):
        save_mask(tmp_path / "m.png", np.zeros((2, 3), np.uint8))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("writer", ["mask", "cam"])
def test_an_interrupt_before_the_rename_keeps_the_old_file(writer, tmp_path, monkeypatch):
    if writer == "mask":
        path = tmp_path / "m.png"
        save_mask(path, np.full((2, 3), 4, np.uint8))
        write = lambda: save_mask(path, np.zeros((2, 3), np.uint8))  # noqa: E731
    else:
        path = tmp_path / "c.npz"
        save_cam(path, np.ones((2, 2, 3), np.float32), np.array([1.0, 0.0]))
        write = lambda: save_cam(path, np.zeros((2, 2, 3), np.float32),  # noqa: E731
                                 np.array([1.0, 0.0]))
    before = path.read_bytes()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write()
    assert os.listdir(tmp_path) == [path.name] and path.read_bytes() == before
    if writer == "mask":
        assert (load_mask(path) == 4).all()
