"""A model that records what it was asked (the positions and tokens of every forward call), for the generation and
candidate tests."""

from __future__ import annotations

import torch.nn as nn

from llm.model import GPT


class Recorder(nn.Module):
    """Wraps a GPT, records each forward's input shape and can force chosen tokens.

    `script[k]` (a token id, or a list with one id per sample) becomes the overwhelming favourite for
    new token k; the wrapped model still runs, so the KV cache path is exercised for real.
    """

    def __init__(self, inner: GPT, prompt_length: int = 0, script: list | None = None):
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.prompt_length, self.script = prompt_length, script or []
        self.calls: list[tuple[int, int]] = []
        self.eval()  # generate restores the mode it found: keep the shared model in eval mode

    def new_kv_cache(self, batch_size, max_len=None):
        return self.inner.new_kv_cache(batch_size, max_len)

    def forward(self, idx, kv_cache=None, **kwargs):
        self.calls.append(tuple(idx.shape))
        logits, loss = self.inner(idx, kv_cache=kv_cache, **kwargs)
        new_index = kv_cache.length - self.prompt_length  # index of the token these logits predict
        if 0 <= new_index < len(self.script):
            wanted = self.script[new_index]
            wanted = wanted if isinstance(wanted, list) else [wanted] * idx.shape[0]
            logits = logits.clone()
            for row in range(idx.shape[0]):  # a batch-1 run follows sample 0's script
                logits[row, -1, wanted[row]] += 1e4
        return logits, loss
