"""Files written whole or not at all: a temporary file, then a rename, so a reader (or a crash) never sees half.

Torch-free, so the job layer can snapshot a run's inputs without importing the model code.
"""

from __future__ import annotations

import os
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """Where `path` is written before its rename: a name of this process's own, so two processes writing the
    same file at once (the ranks of a data-parallel run, llm/distributed.py) never rename each other's half."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file + rename so readers never see a half-written file."""
    tmp = temporary_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)
