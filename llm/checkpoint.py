"""Saving and loading a model directory: `config.json` + `model.safetensors`, never pickle.

A model directory (a training run's output, an imported GPT-2) holds:
  config.json        {"model": GPTConfig as a dict, "tokenizer": "gpt2" | "cl100k" | <trained name or dir>}
  model.safetensors  the weights (tied embeddings are stored once)
Training state for resuming (optimizer, step, RNG, data position) is separate: see `train.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llm.model import GPT, GPTConfig
from llm.tokenizer import Tokenizer, get_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file + rename so readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """`save_file` through a temporary file + rename, like `atomic_write_text`."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_model(model: GPT, out_dir: str | os.PathLike, tokenizer_name: str, extra: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        state.pop("lm_head.weight", None)  # the same tensor as wte.weight
    atomic_save_safetensors(state, out_dir / WEIGHTS_FILE)
    config = {"model": model.config.to_dict(), "tokenizer": tokenizer_name, **(extra or {})}
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2))
    return out_dir


def read_config(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model directory: {CONFIG_FILE} is missing")
    return json.loads(path.read_text())


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu",
               data_dir: str | os.PathLike | None = None) -> tuple[GPT, Tokenizer]:
    """Load a model directory for inference (eval mode) together with its tokenizer."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    model = GPT(GPTConfig.from_dict(config["model"]))
    state = load_file(str(model_dir / WEIGHTS_FILE), device="cpu")
    if model.config.tie_weights:
        state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state)
    tokenizer = get_tokenizer(config["tokenizer"], data_dir=data_dir)
    return model.to(device).eval(), tokenizer
