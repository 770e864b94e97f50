"""Files written whole or not at all: a temporary file, then a rename, so a reader (or a crash) never sees half.

Torch-free, so the job layer can snapshot a run's inputs without importing the model code.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file + rename so readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
