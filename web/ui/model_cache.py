"""A small LRU cache of loaded models for the Chat tab.

Where chat generation runs — decision
-------------------------------------
Chat generation runs **in the web process, on CPU** (DESIGN.md allows the web process or a
dedicated inference worker, "decide with measurements"). Reasons:

* The models this workbench trains by default are small: the `tiny` preset is ~3.3M
  parameters with the GPT-2 vocabulary (almost all of it the embedding), `small` ~30M. Loading one from
  safetensors takes well under a second and sampling with the KV cache runs at hundreds of
  tokens/s (tiny) and tens of tokens/s (small) on one CPU core (see the numbers in
  `tests/test_ui_units.py::test_generation_speed_note`... measured by hand and quoted in the
  report / README). That is faster than people read, so a queue round-trip through Celery
  would only add latency and a streaming channel (Redis pub/sub) we do not need yet.
* Streaming is natural here: the Gradio handler is a generator yielding text deltas from
  `llm.generate.stream_text` straight to the browser.
* Training stays on the worker: the web process never trains.

Limits that keep it safe: at most `WORKBENCH_CHAT_CACHE_SIZE` (default 2) models stay in
memory (least recently used evicted), loads are serialised per model so ten browser tabs
asking for the same model load it once, and a model whose weights file changed on disk
(re-exported, resumed) is reloaded. When people start chatting with GPT-2-small-sized models
on a shared box, move generation to an inference worker; this module's `get()` is the seam.

The cache is keyed by the model directory plus the weights file's mtime/size, so the same
model row always maps to the same entry and a rewritten checkpoint is never served stale.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

DEFAULT_CAPACITY = 2

Loader = Callable[[Path], tuple[Any, Any]]


def _default_loader(data_dir: str | os.PathLike | None) -> Loader:
    def load(model_dir: Path) -> tuple[Any, Any]:
        from llm.checkpoint import load_model

        return load_model(model_dir, device="cpu", data_dir=data_dir)

    return load


def weights_fingerprint(model_dir: str | os.PathLike) -> tuple:
    """(mtime_ns, size) of the weights file, or () if there is none yet."""
    model_dir = Path(model_dir)
    for name in ("model.safetensors", "config.json"):
        path = model_dir / name
        if path.is_file():
            st = path.stat()
            return (name, st.st_mtime_ns, st.st_size)
    return ()


class ModelCache:
    """Thread-safe LRU of `(model, tokenizer)` pairs keyed by model directory + fingerprint."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, loader: Loader | None = None,
                 data_dir: str | os.PathLike | None = None,
                 fingerprint: Callable[[Path], tuple] = weights_fingerprint):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._loader = loader or _default_loader(data_dir)
        self._fingerprint = fingerprint
        self._entries: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[Hashable, threading.Lock] = {}
        self.loads = 0   # how many times the loader ran (tests, diagnostics)

    def key(self, model_dir: str | os.PathLike) -> tuple:
        path = Path(model_dir).resolve()
        return (str(path), self._fingerprint(path))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def get(self, model_dir: str | os.PathLike) -> tuple[Any, Any]:
        """The loaded (model, tokenizer) for `model_dir`, loading it (once) on a miss."""
        key = self.key(model_dir)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per key even when many requests miss together
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
            value = self._loader(Path(key[0]))
            with self._lock:
                self.loads += 1
                # a stale version of the same directory (older fingerprint) goes first
                for old in [k for k in self._entries if isinstance(k, tuple) and k[0] == key[0]]:
                    del self._entries[old]
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
                self._load_locks.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_shared: ModelCache | None = None
_shared_lock = threading.Lock()


def shared_cache(data_dir: str | os.PathLike | None = None) -> ModelCache:
    """The web process's one cache (capacity from WORKBENCH_CHAT_CACHE_SIZE)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            capacity = int(os.environ.get("WORKBENCH_CHAT_CACHE_SIZE", DEFAULT_CAPACITY))
            _shared = ModelCache(capacity=max(1, capacity), data_dir=data_dir)
        return _shared
