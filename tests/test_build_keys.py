"""A directory app's content hash: remembered while its tree is unchanged, new when a file changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from herder.agent.builds import tree_hash
from herder.agent.builds.builds import _TREE_HASHES


def _age(root: Path, seconds: float) -> None:
    """Set every file's mtime ``seconds`` in the past (past the racy window)."""
    then = time.time() - seconds
    for path in root.rglob("*"):
        os.utime(path, (then, then), follow_symlinks=False)


def test_an_unchanged_tree_keeps_its_hash_and_is_remembered(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: run\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    _age(tmp_path, 60)
    first = tree_hash(tmp_path)
    assert _TREE_HASHES[tmp_path][1] == first
    assert tree_hash(tmp_path) == first


def test_a_changed_file_of_the_same_size_gives_a_new_hash(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: run\n")
    (tmp_path / "requirements.txt").write_text("alpha\n")
    _age(tmp_path, 60)
    first = tree_hash(tmp_path)
    (tmp_path / "requirements.txt").write_text("bravo\n")  # same size, written just now
    second = tree_hash(tmp_path)
    assert second != first
    _age(tmp_path, 30)  # an old mtime again, but not the one remembered
    (tmp_path / "requirements.txt").write_text("charl\n")
    _age(tmp_path, 30)
    assert tree_hash(tmp_path) not in (first, second)


def test_a_tree_written_just_now_is_not_remembered(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: run\n")
    first = tree_hash(tmp_path)
    assert tmp_path not in _TREE_HASHES
    (tmp_path / "Procfile").write_text("web: ran\n")
    assert tree_hash(tmp_path) != first
