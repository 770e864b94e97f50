"""Saving and loading a model directory, never pickle. Two architectures, named in `config.json`:

A full model ("gpt": a pretraining run's output, an imported GPT-2, a merged or fully fine-tuned model):
  config.json                 {"architecture": "gpt", "model": GPTConfig as a dict,
                               "tokenizer": "gpt2" | "cl100k" | <trained name or dir>, ...}
  model.safetensors           the weights (tied embeddings are stored once)

A LoRA adapter ("lora_adapter", written by `llm.lora.save_adapter`), which loads onto its base model
(`load_adapter`: loading is this module's; llm/lora.py builds on it, never the other way round):
  config.json                 {"architecture": "lora_adapter", "base_model": <base model dir, relative to
                               this directory when possible>, "model": the base's GPTConfig, "tokenizer", ...}
  adapter_config.json         peft's LoraConfig
  adapter_model.safetensors   the adapter's weights (peft's names)

A reward model ("reward_model", written by `llm.reward.save_reward_model`): a full model directory whose
model.safetensors is the network (LoRA merged in) plus score.safetensors, the scalar head on its last hidden
state. `load_weights` gives its network; `llm.reward.load_reward_model` the whole scorer.

Any of them may also say "chat": true (fine-tuned on the chat template, by llm/sft.py) and carry what a model
inherits from its base ("hf_vocab_size", "preset"). Directories written before the "architecture" key
existed are full models. Training state for resuming
(optimizer, step, RNG, data position) is separate: see `train.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llm.atomic_files import atomic_write_text, temporary_name
from llm.model import GPT, GPTConfig
from llm.tokenizer import Tokenizer, get_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GPT_ARCHITECTURE = "gpt"
ADAPTER_ARCHITECTURE = "lora_adapter"
REWARD_ARCHITECTURE = "reward_model"  # a GPT plus a scalar head (score.safetensors): llm/reward.py
ARCHITECTURES = (GPT_ARCHITECTURE, ADAPTER_ARCHITECTURE, REWARD_ARCHITECTURE)


def atomic_save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """`save_file` through a temporary file + rename, like `atomic_write_text`."""
    tmp = temporary_name(path)
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_model(model: GPT, out_dir: str | os.PathLike, tokenizer_name: str, extra: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        state.pop("lm_head.weight", None)  # the same tensor as wte.weight
    atomic_save_safetensors(state, out_dir / WEIGHTS_FILE)
    config = {**(extra or {}), "architecture": GPT_ARCHITECTURE, "model": model.config.to_dict(),
              "tokenizer": tokenizer_name}
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2))
    return out_dir


def read_config(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model directory: {CONFIG_FILE} is missing")
    return json.loads(path.read_text())


def read_architecture(model_dir: str | os.PathLike) -> str:
    """"gpt" (a full model) or "lora_adapter"; directories from before the key existed are "gpt"."""
    architecture = read_config(model_dir).get("architecture", GPT_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{model_dir} holds a {architecture!r} model; this version reads "
                         f"{', '.join(ARCHITECTURES)}")
    return architecture


def is_chat_model(model_dir: str | os.PathLike) -> bool:
    """Whether the model was fine-tuned on the chat template (SFT writes "chat": true; an adapter with no
    such key is taken to be one), so chat should render conversations rather than complete text."""
    config = read_config(model_dir)
    return bool(config.get("chat", config.get("architecture") == ADAPTER_ARCHITECTURE))


def base_model_dir_of(adapter_dir: str | os.PathLike) -> Path:
    """The base model directory an adapter names (stored relative to the adapter directory when possible)."""
    adapter_dir = Path(adapter_dir)
    base = read_config(adapter_dir).get("base_model")
    if not base:
        raise ValueError(f"{adapter_dir} is a LoRA adapter that does not name its base model")
    path = (adapter_dir / base).resolve()  # an absolute path stays as it is
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{adapter_dir} is a LoRA adapter of {base} ({path}), which is not a model "
                                f"directory; name the base model directory explicitly")
    return path


def load_weights(model_dir: str | os.PathLike, base_model_dir: str | os.PathLike | None = None) -> GPT:
    """The GPT a model directory holds, on the CPU. A LoRA adapter is loaded onto its base model (the
    directory its config.json names, or `base_model_dir` when the caller knows better) and merged into
    the weights; a base that is itself an adapter is loaded the same way, so chains of fine-tunes load."""
    model_dir = Path(model_dir)
    if read_architecture(model_dir) == ADAPTER_ARCHITECTURE:
        base = load_weights(base_model_dir or base_model_dir_of(model_dir))
        return load_adapter(base, model_dir).merge_and_unload()
    model = GPT(GPTConfig.from_dict(read_config(model_dir)["model"]))
    state = load_file(str(model_dir / WEIGHTS_FILE), device="cpu")
    if model.config.tie_weights:
        state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state)
    return model


def load_adapter(base_model: torch.nn.Module, adapter_dir: str | os.PathLike, trainable: bool = False):
    """`base_model` (a GPT, modified in place) with the adapter saved in `adapter_dir` attached (a peft model):
    to train it further (`trainable`), switch it off, or merge it (`merge_and_unload`)."""
    import peft  # only when an adapter is loaded: peft takes a second to import

    return peft.PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=trainable)


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu",
               data_dir: str | os.PathLike | None = None,
               base_model_dir: str | os.PathLike | None = None) -> tuple[GPT, Tokenizer]:
    """Load a model directory for inference (eval mode) together with its tokenizer.

    Full models and LoRA adapters alike (see `load_weights`; `base_model_dir` overrides the base an
    adapter names, e.g. for the worker, whose database knows the parent). An adapter comes back merged:
    inference then costs what the base model costs, with no adapter matmuls. (`load_adapter` keeps an
    adapter separate, for training it further or switching it off.)
    """
    if read_architecture(model_dir) == REWARD_ARCHITECTURE:
        raise ValueError(f"{model_dir} is a reward model: it scores answers, it does not write them "
                         "(use it for best-of-N, or chat with the model it was trained from)")
    model = load_weights(model_dir, base_model_dir)
    tokenizer = get_tokenizer(read_config(model_dir)["tokenizer"], data_dir=data_dir)
    return model.to(device).eval(), tokenizer
