"""Atomic writes leave either the old file or the new one, never a half-written file."""

import pytest
import torch
from safetensors.torch import load_file

from sae_course.files import save_safetensors_atomic, write_json_atomic, write_text_atomic


def test_text_and_json_round_trip(tmp_path):
    write_text_atomic(tmp_path / "a" / "note.txt", "hello")
    write_json_atomic(tmp_path / "state.json", {"step": 3})
    assert (tmp_path / "a" / "note.txt").read_text() == "hello"
    assert (tmp_path / "state.json").read_text() == '{\n  "step": 3\n}\n'


def test_safetensors_round_trip(tmp_path):
    t = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    save_safetensors_atomic({"t": t}, tmp_path / "w.safetensors", {"kind": "test"})
    assert torch.equal(load_file(tmp_path / "w.safetensors")["t"], t)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors_atomic({"t": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - safetensors refuses a non-tensor value
        save_safetensors_atomic({"t": "not a tensor"}, path)  # type: ignore[dict-item]
    assert torch.equal(load_file(path)["t"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
