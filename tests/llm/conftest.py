"""Fixtures of the llm tests: a tiny GPT-2-vocabulary base model saved on disk, and a periodic token stream the
training-loop tests learn (test_train, test_learning_watch, test_lr_find)."""

from __future__ import annotations

import pytest
import torch

from llm.checkpoint import save_model
from llm.model import GPT, config_from_preset
from llm.tokenizer import get_tokenizer
from tests.support.token_streams import write_periodic_data


@pytest.fixture
def base_dir(tmp_path):
    tokenizer = get_tokenizer("gpt2")
    torch.manual_seed(0)
    return save_model(GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)), tmp_path / "base", "gpt2")


@pytest.fixture
def periodic_data(tmp_path):
    """A prepared directory whose token stream repeats a fixed sequence of 61 distinct ids."""
    return write_periodic_data(tmp_path / "prepared")
