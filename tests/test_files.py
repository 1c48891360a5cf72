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


@pytest.mark.parametrize("swap_in_one_step", [True, False])
def test_write_folder_atomic_replaces_the_folder_as_a_whole(tmp_path, monkeypatch,
                                                            swap_in_one_step):
    from sae_course import files

    if not swap_in_one_step:  # the path taken where renameat2 is missing (macOS, Windows)
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "pair"

    def pair(text: str):
        def write(tmp):
            (tmp / "a").write_text(text)
            (tmp / "b").write_text(text)
        return write

    files.write_folder_atomic(target, pair("old"))
    files.write_folder_atomic(target, pair("new"))
    assert [(p.name, p.read_text()) for p in sorted(target.iterdir())] == [("a", "new"),
                                                                          ("b", "new")]
    with pytest.raises(RuntimeError):
        files.write_folder_atomic(target, lambda tmp: (_ for _ in ()).throw(RuntimeError()))
    assert (target / "a").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["pair"]  # no temporary folders left
    (tmp_path / ".pair.new-stale").mkdir()  # what a kill during a write leaves
    files.write_folder_atomic(target, pair("newer"))
    assert files.stale_folders(target) == [] and (target / "b").read_text() == "newer"


def test_written_files_and_folders_get_the_umask_mode_not_a_private_one(tmp_path):
    from sae_course import files

    write_text_atomic(tmp_path / "note.txt", "hello")
    files.write_folder_atomic(tmp_path / "pair", lambda tmp: (tmp / "a").write_text("x"))
    assert (tmp_path / "note.txt").stat().st_mode & 0o777 == 0o666 & ~files.UMASK
    assert (tmp_path / "pair").stat().st_mode & 0o777 == 0o777 & ~files.UMASK
