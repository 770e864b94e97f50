"""LoRA adapters on our GPT, through peft: attach, count, save, load, merge.

    apply_lora(model, sft_config)        -> a peft model: the GPT with low-rank adapters on its projections
    save_adapter(peft_model, out_dir, base_model_dir, tokenizer_name)
                                         -> peft's adapter_config.json + adapter_model.safetensors, and our
                                            config.json naming the base (see llm/checkpoint.py)
    llm.checkpoint.load_adapter(base_model, adapter_dir)
                                         -> the base with the saved adapter attached (peft model); loading a
                                            model directory is llm/checkpoint.py's, which this module builds on
    merge_adapter(adapter_dir, out_dir)  -> a full model directory (W + B A * alpha / r in each matrix)
    adapters_merged(model)               -> a context: the adapters merged into the weights while inside (for
                                            sampling), the base weights restored exactly on leaving

How peft is attached, and why (peft's docs assume a transformers model; ours is a plain nn.Module):
  - `LoraConfig(target_modules=...)` with no `task_type`: `task_type="CAUSAL_LM"` wraps the model in
    `PeftModelForCausalLM`, whose forward calls ours with transformers' keyword arguments
    (input_ids=, attention_mask=, labels=...). The plain `PeftModel` passes our arguments through
    untouched, so `peft_model(idx, targets)` and `peft_model(idx, kv_cache=...)` work as on the GPT.
  - Target names are module-name suffixes: "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
    Our `llm.model.Linear` subclasses nn.Linear, so peft wraps it as a `lora.Linear` whose base layer
    is still ours (the fast few-row decoding path keeps working in the frozen matmul).
  - peft reads `model.config` only when it has one of transformers' methods; a dataclass is fine (peft
    >= 0.18 handles that; GPTConfig also has to_dict).
  - `PeftModel.__init__` calls `enable_input_require_grads()` or hooks `get_input_embeddings()` when the
    model has either (for gradient checkpointing). Our GPT has neither, on purpose: the hook would make
    the token embedding's output require grad (wasted backward work) and, with tied embeddings, touch the
    matrix lm_head shares. `tests/llm/test_lora.py` checks no hook is added and the tie survives.
  - Only the adapters train: `get_peft_model` freezes every base weight, the embeddings included.

Cost (measured, B=8, T=256, one CPU thread, interleaved runs on a shared 2-core machine): the wrapped
forward takes what the bare GPT's does (tiny 437 vs 519 ms, small 1853 vs 1886 ms: noise), and a LoRA
step takes what a frozen GPT with no adapter at all takes (tiny 1094 vs 1108 ms), 10-25 % less than a
full fine-tuning step (no weight gradients for the big matrices). Fusing the adapter's `B(A x) * s + y`
into one in-place addmm saved 27 % of one adapted 384 -> 1152 matmul in isolation but nothing measurable
per step, so peft's own layer is used as it is.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from llm.atomic_files import atomic_write_text
from llm.checkpoint import (ADAPTER_ARCHITECTURE, CONFIG_FILE, WEIGHTS_FILE, load_weights,
                            read_config, save_model)
from llm.sft_config import SFTConfig

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# lora_targets (llm/sft_config.py) -> module-name suffixes: attention's q/k/v and output projections,
# the MLP's two matrices. "attn.c_proj" and "mlp.c_proj" are spelled out because both are "c_proj".
TARGET_MODULES = {"attn": ["attn.c_attn", "attn.c_proj"], "mlp": ["mlp.c_fc", "mlp.c_proj"]}


def target_modules(lora_targets: str) -> list[str]:
    """The peft `target_modules` for an SFTConfig.lora_targets value ("attn,mlp", "attn" or "mlp")."""
    parts = [part.strip() for part in lora_targets.split(",") if part.strip()]
    unknown = [part for part in parts if part not in TARGET_MODULES]
    if not parts or unknown:
        raise ValueError(f"lora_targets must name attn and/or mlp, got {lora_targets!r}")
    return [name for part in parts for name in TARGET_MODULES[part]]


def lora_config(sft_config: SFTConfig, modules_to_save: list[str] | None = None):
    import peft

    return peft.LoraConfig(r=sft_config.lora_r, lora_alpha=sft_config.lora_alpha,
                           lora_dropout=sft_config.lora_dropout,
                           target_modules=target_modules(sft_config.lora_targets), modules_to_save=modules_to_save)


def apply_lora(model: nn.Module, sft_config: SFTConfig, modules_to_save: list[str] | None = None):
    """Wrap `model` (a GPT, or a module holding one) with LoRA adapters; the base weights are frozen, the
    adapters trainable, and so are the modules named in `modules_to_save` (a reward model's new head).

    peft initialises A randomly and B to zero, so the wrapped model starts out computing exactly what the
    base does. Seed torch first for a reproducible A.
    """
    import peft

    return peft.get_peft_model(model, lora_config(sft_config, modules_to_save))


def trainable_parameter_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, a tied matrix counted once."""
    params = list(model.parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def base_model_reference(base_model_dir: str | os.PathLike, adapter_dir: str | os.PathLike) -> str:
    """How an adapter's config.json names its base: relative to the adapter directory (so a data directory
    can move as a whole), or absolute where no relative path exists (another drive on Windows)."""
    base, adapter = Path(base_model_dir).resolve(), Path(adapter_dir).resolve()
    try:
        return Path(os.path.relpath(base, adapter)).as_posix()
    except ValueError:
        return str(base)


def save_adapter(peft_model, out_dir: str | os.PathLike, base_model_dir: str | os.PathLike,
                 tokenizer_name: str, extra: dict | None = None) -> Path:
    """Write the adapter in peft's format plus our config.json (written last: its presence marks a complete
    directory). The config carries the base's GPTConfig and its other facts (hf_vocab_size, preset)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = base_model_reference(base_model_dir, out_dir)
    adapter_config = peft_model.peft_config["default"]
    adapter_config.base_model_name_or_path = reference  # peft's field for "what this adapts"
    # Embeddings are never adapted here; "auto" would look for the base config at a cwd-relative path.
    peft_model.save_pretrained(str(out_dir), save_embedding_layers=False)
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    (out_dir / WEIGHTS_FILE).unlink(missing_ok=True)  # a full model from an earlier run in the same directory
    base_config = read_config(base_model_dir)
    config = {**base_config, **(extra or {}), "architecture": ADAPTER_ARCHITECTURE, "base_model": reference,
              "tokenizer": tokenizer_name, "model": base_config["model"]}
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2))
    return out_dir


def merge_adapter(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  base_model_dir: str | os.PathLike | None = None) -> Path:
    """A full model directory whose weights are the base's with the adapter added in: it exports to
    Hugging Face GPT-2 (`llm.hf_gpt2.export_hf_gpt2`) and loads without peft."""
    adapter_dir = Path(adapter_dir)
    config = read_config(adapter_dir)
    if config.get("architecture") != ADAPTER_ARCHITECTURE:
        raise ValueError(f"{adapter_dir} is not a LoRA adapter directory")
    model = load_weights(adapter_dir, base_model_dir)  # loads the base, attaches the adapter, merges
    extra = {key: value for key, value in config.items()
             if key not in ("architecture", "base_model", "model", "tokenizer")}
    extra["merged_from"] = str(adapter_dir.resolve())
    return save_model(model, out_dir, config["tokenizer"], extra=extra)


@contextmanager
def adapters_merged(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with each enabled LoRA layer's adapter merged into its base weight (W + B A * alpha / r) while inside:
    an adapted layer then runs one matmul instead of three (peft's layer skips the adapter when merged), which is
    what sampling wants (the adapter's small matmuls were ~60 % of GRPO's sampling forwards). For inference only:
    nothing may backpropagate through the merged weights. On leaving, the base weights are copied back from a saved
    copy, not unmerged (W + d - d is not W in floating point), so they are bit for bit what they were. A model
    without LoRA layers (full fine-tuning) is used as it is."""
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules()
              if isinstance(module, LoraLayer) and not module.merged and not module.disable_adapters]
    saved = []
    try:
        with torch.no_grad():
            for layer in layers:
                base = layer.get_base_layer()
                saved.append((layer, base.weight.detach().clone(),
                              None if base.bias is None else base.bias.detach().clone()))
                layer.merge()
        yield model
    finally:
        with torch.no_grad():
            for layer, weight, bias in saved:
                base = layer.get_base_layer()
                base.weight.copy_(weight)
                if bias is not None:
                    base.bias.copy_(bias)
                layer.merged_adapters.clear()
