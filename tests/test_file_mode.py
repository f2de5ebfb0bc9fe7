"""Files embedeverything writes get the mode a plain open() would give them."""

from __future__ import annotations

import os

import pytest


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_adapters_and_other_files_follow_the_umask(tmp_path, umask):
    """safetensors makes its files 0600; the final file takes 0666 less the umask, as ``open()`` does,
    and a file written over keeps its own mode."""
    import torch

    from embedeverything.files import atomic_path, write_text_atomic

    old = os.umask(umask)
    try:
        from safetensors.torch import save_file

        with atomic_path(tmp_path / "a.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
        write_text_atomic(tmp_path / "t.json", "{}")
        os.chmod(tmp_path / "t.json", 0o640)
        write_text_atomic(tmp_path / "t.json", "{ }")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.safetensors").st_mode & 0o777 == 0o666 & ~umask
    assert os.stat(tmp_path / "t.json").st_mode & 0o777 == 0o640
