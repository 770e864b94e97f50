"""A small LRU cache of loaded models for chat, best-of-N and the arena, and the web process's torch threads.

Where chat generation runs — decision
-------------------------------------
Chat generation runs **in the web process, on the CPU** (DESIGN.md allows the web process or a
dedicated inference worker, "decide with measurements"). Measured on this project's 2-core
build VM with another process training at the same time (the normal case: the worker is busy),
GPT-2 tokenizer, KV cache, top-k 50, one torch thread, `stream_text`:

    preset      params   load    first token   tokens/s
    tiny         3.3M    0.10 s      6 ms        310
    small       30.0M    0.8 s      33 ms         37
    gpt2-124m  123.7M    2.4 s     143 ms         12

Re-measured after decoding got its few-row linears (llm/model.py `linear`), same setup, random weights,
64 new tokens: tiny 470–970, small 77–79, gpt2-124m 17–19 tokens/s (the previous code in the same run:
650, 50, 17).

People read about 5–10 tokens a second, so every preset streams faster than it is read, and the
first token arrives in well under a second once the model is cached. A queue round-trip to a
Celery inference worker would add latency and a streaming channel (Redis pub/sub) and buy
nothing at these sizes; training, which does need isolation, already runs in the worker.

Threads: with the default (one intra-op thread per core) the same runs were 2–4× *slower*
(tiny 135 tokens/s, small 16) because a decoding step is many tiny ops that fight the training
process for the two cores. So the web process uses `WORKBENCH_CHAT_THREADS` torch threads
(default 1) and each concurrent chat takes at most one core (the Chat tab allows 2 at once).

Limits that keep it safe: at most `WORKBENCH_CHAT_CACHE_SIZE` models (default 2) stay loaded, least
recently used evicted; loads are serialised per model, so ten browser tabs asking for the same
model load it once; a model whose weights changed on disk (re-trained, resumed) is reloaded.
When bigger models or many simultaneous chatters arrive, move generation to an inference
worker: `ModelCache.get()` is the seam.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

from llm.threads import set_threads

DEFAULT_CAPACITY = 2

Loader = Callable[[Path], tuple[Any, Any]]


_threads_configured = False


def configure_chat_threads() -> int:
    """Limit the web process's torch intra-op threads for decoding (WORKBENCH_CHAT_THREADS, default 1).

    `torch.set_num_threads` is process-wide, and `web.services.estimate_pretrain` measures this
    process's matmul peak (once, cached: `web.services.estimate_peak_flops`) to estimate training time
    on the worker's full thread count. So that peak is measured first, with the default threads, before
    the limit applies.
    """
    global _threads_configured
    import torch

    threads = max(1, int(os.environ.get("WORKBENCH_CHAT_THREADS", "1") or 1))
    if not _threads_configured:
        _threads_configured = True
        try:
            from web.services import estimate_peak_flops

            estimate_peak_flops("cpu")
        except Exception:  # the estimate is a nicety; chat must not fail because of it
            pass
        set_threads(threads, f"WORKBENCH_CHAT_THREADS={threads}: the web process's chat")
    return torch.get_num_threads()


def _default_loader(data_dir: str | os.PathLike | None) -> Loader:
    def load(model_dir: Path) -> tuple[Any, Any]:
        from llm.checkpoint import load_model

        configure_chat_threads()
        return load_model(model_dir, device="cpu", data_dir=data_dir)

    return load


def weights_fingerprint(model_dir: str | os.PathLike) -> tuple:
    """(mtime_ns, size) of the weights file, or () if there is none yet."""
    model_dir = Path(model_dir)
    for name in ("model.safetensors", "adapter_model.safetensors", "config.json"):
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
