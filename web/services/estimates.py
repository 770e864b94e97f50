"""Estimates shown before a job is submitted: model size, tokens, a rough run time."""

from __future__ import annotations

import os
from pathlib import Path

from llm.memory import gpt_parameter_count, lora_trainable_params, training_memory
from web.services.common import InvalidInput

# Share of the peak matmul FLOP/s a training step really achieves. Small models spend much of a
# step outside big matmuls (optimizer, layer norms, Python), so CPU runs of the tiny preset reach
# well under half of the matmul peak; 0.3 is a middle-of-the-road guess for planning, not a promise.
# The estimate reports the factor it used so the UI can show it.
ASSUMED_UTILISATION = {"cpu": 0.3, "cuda": 0.4}


_PEAK_FLOPS_CACHE: dict[str, float] = {}


def estimate_peak_flops(device_type: str) -> float:
    """Peak FLOP/s for estimates, measured once per process (the Chat tab measures it before it limits
    this process's torch threads, see web.services.model_cache).

    GPUs: the data-sheet number when known (`llm.device.peak_flops`). CPUs: a 1024 x 1024 float32
    matmul, which reaches the same FLOP/s as llm.device's 2048 one within a few percent here but
    costs a fraction of a second instead of seconds, so the first estimate in the UI stays quick.
    """
    if device_type not in _PEAK_FLOPS_CACHE:
        from llm.device import measure_matmul_peak_flops, peak_flops

        _PEAK_FLOPS_CACHE[device_type] = (peak_flops(device_type) if device_type == "cuda"
                                          else measure_matmul_peak_flops("cpu", size=1024))
    return _PEAK_FLOPS_CACHE[device_type]


def _train_defaults() -> dict:
    """The defaults of the run's shape, from the one place they are declared (TrainConfig)."""
    from llm.train_config import TrainConfig

    defaults = TrainConfig()
    return {"batch_size": defaults.batch_size, "block_size": defaults.block_size, "grad_accum": defaults.grad_accum,
            "max_steps": defaults.max_steps}


def _checked(params: dict, key: str, default):
    """params[key] (empty: `default`) checked against its declaration on TrainConfig (type and bounds, the
    rules a submitted job obeys), or InvalidInput naming it. Numbers typed as text ("8") are read."""
    from llm.params import settings_of
    from llm.train_config import TrainConfig

    raw = params.get(key)
    if raw is None or raw == "":
        return default
    spec = settings_of(TrainConfig)[key]
    if isinstance(raw, str) and spec.type in ("int", "float"):
        try:
            raw = int(raw.strip()) if spec.type == "int" else float(raw.strip())
        except ValueError:
            pass  # spec.check says what is wrong
    try:
        return spec.check(key, raw)
    except ValueError as error:
        raise InvalidInput(f"{key} {error}", field=key) from None


def _text(params: dict, key: str, default: str) -> str:
    """A name (preset, tokenizer) from params (empty: `default`), or InvalidInput if it is not text."""
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise InvalidInput(f"{key} must be a name (text), got {raw!r:.80}", field=key)
    return raw.strip()


def _run_shape(params: dict, defaults: dict) -> dict[str, int]:
    """batch_size, block_size, grad_accum, max_steps from a form's params (empty: the default), each within
    its declared bounds, or InvalidInput naming it."""
    return {key: _checked(params, key, defaults[key]) for key in ("batch_size", "block_size", "grad_accum", "max_steps")}


def _tokenizer_vocab_size(name: str, data_dir: Path | None) -> int:
    """Vocabulary size of a known tokenizer; only known names are loaded, never a path from a request."""
    from llm.tokenizer import get_tokenizer, tokenizer_names

    names = tokenizer_names(data_dir)
    if name not in names:
        raise InvalidInput(f"unknown tokenizer {name!r}; choose one of {', '.join(names)}", field="tokenizer")
    return get_tokenizer(name, data_dir).vocab_size


def _worker_memory(device_type: str) -> dict:
    """What the submit check compares memory_bytes with (worker/kinds/fit.py), so a form can warn first."""
    from worker.jobs.fit import worker_memory

    available, source = worker_memory(device_type)
    return {"worker_memory_bytes": available, "worker_memory_source": source}


def _shape_overrides(params: dict) -> dict[str, int]:
    """n_layer, n_head, n_embd given on top of the preset (empty: the preset's), each a whole number >= 1."""
    shape = {}
    for key in ("n_layer", "n_head", "n_embd"):
        raw = params.get(key)
        if raw is None or raw == "":
            continue
        try:
            shape[key] = int(raw)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"{key} must be a whole number, got {raw!r}", field=key) from None
        if shape[key] < 1:
            raise InvalidInput(f"{key} must be at least 1, got {raw!r}", field=key)
    return shape


def estimate_pretrain(params: dict, data_dir: str | os.PathLike | None = None) -> dict:
    """Model size and a rough run time for a pretrain job's params, before it is submitted.

    - params_count: non-embedding-position parameter count of GPT(config), built on PyTorch's "meta"
      device so no memory is allocated even for the 124M preset.
    - tokens_per_step = batch_size * block_size * grad_accum.
    - est_seconds = flops_per_token * tokens_per_step * max_steps / (peak FLOP/s * utilisation), where
      flops_per_token is the model's own 6N + attention count, the peak is this machine's measured
      matmul FLOP/s (`estimate_peak_flops`, measured once per process) or a GPU's data-sheet peak,
      and utilisation is ASSUMED_UTILISATION (see above). Data loading and evaluation are not counted.
    - memory_bytes: peak memory of a step (`llm.memory.training_memory`), the figure the pretrain kind's
      check compares with what the workers have.
    """
    import torch

    from llm.model import GPT, config_from_preset

    defaults = _train_defaults()
    preset = _text(params, "preset", "tiny")
    tokenizer = _text(params, "tokenizer", "gpt2")
    values = _run_shape(params, defaults)
    device = _checked(params, "device", "auto")
    dtype = _checked(params, "dtype", None)
    vocab_size = _tokenizer_vocab_size(tokenizer, Path(data_dir) if data_dir else None)
    shape = _shape_overrides(params)
    try:
        config = config_from_preset(preset, vocab_size, block_size=values["block_size"], **shape)
    except ValueError as error:
        raise InvalidInput(str(error), field="preset") from None
    if config.n_embd % config.n_head:
        raise InvalidInput(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})",
                           field="n_head" if "n_head" in shape else "n_embd")
    with torch.device("meta"):
        model = GPT(config)
    block_size = config.block_size
    tokens_per_step = (values["batch_size"] or 1) * block_size * (values["grad_accum"] or 1)
    flops_per_token = model.flops_per_token(block_size)

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    device_type = "cuda" if use_cuda and torch.cuda.is_available() else "cpu"
    peak = estimate_peak_flops(device_type)
    utilisation = ASSUMED_UTILISATION[device_type]
    max_steps = values["max_steps"] or 0
    est_seconds = flops_per_token * tokens_per_step * max_steps / (peak * utilisation)
    total_params = model.num_params(non_embedding=False)
    memory = training_memory(total_params=total_params, trainable_params=total_params, n_layer=config.n_layer,
                             n_embd=config.n_embd, vocab_size=config.vocab_size, batch_size=values["batch_size"],
                             length=block_size, device_type=device_type, dtype=dtype)
    return {
        "params_count": model.num_params(),
        "params_total": total_params,
        "memory_bytes": memory.total,
        **_worker_memory(device_type),
        "tokens_per_step": tokens_per_step,
        "total_tokens": tokens_per_step * max_steps,
        "flops_per_token": flops_per_token,
        "est_seconds": est_seconds,
        "device": device_type,
        "peak_flops": peak,
        "utilisation": utilisation,
        "config": config.to_dict(),
    }


def estimate_finetune(params: dict, model_config: dict) -> dict:
    """Trainable parameters, a rough run time and peak memory of an SFT job on a model of `model_config`.

    Time: forward 2N FLOPs per token and backward 4N (full) or ~2N (LoRA: gradients flow through the
    frozen weights to the adapters, but no weight gradient of the big matrices is computed), over this
    machine's measured peak x ASSUMED_UTILISATION, as for pretraining. Memory: `llm.memory.training_memory`
    (the same figure the sft kind's check compares with what the workers have).
    """
    from dataclasses import asdict

    import torch

    from llm.sft_config import SFT_DEFAULTS, SFTConfig
    from llm.train_config import TrainConfig

    defaults = {**asdict(TrainConfig()), **SFT_DEFAULTS.loop}
    values = _run_shape(params, defaults)
    sft_defaults = SFTConfig()
    full = bool(params.get("full", sft_defaults.full))
    n_layer, n_embd, vocab = model_config["n_layer"], model_config["n_embd"], model_config["vocab_size"]
    total = gpt_parameter_count(n_layer, n_embd, vocab, model_config.get("block_size", 0))
    if full:
        trainable = total
    else:
        rank = int(params.get("lora_r") or sft_defaults.lora_r)
        trainable = lora_trainable_params(model_config, rank, params.get("lora_targets") or sft_defaults.lora_targets)
    length = min(values["block_size"], model_config.get("block_size", values["block_size"]))
    tokens_per_step = values["batch_size"] * length * values["grad_accum"]
    flops_per_token = (6 if full else 4) * total
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    peak = estimate_peak_flops(device_type)
    utilisation = ASSUMED_UTILISATION[device_type]
    memory = training_memory(total_params=total, trainable_params=trainable, n_layer=n_layer, n_embd=n_embd,
                             vocab_size=vocab, batch_size=values["batch_size"], length=length,
                             device_type=device_type, dtype=_checked(params, "dtype", None)).total
    return {
        "params_total": total, "trainable_params": trainable, "tokens_per_step": tokens_per_step,
        "total_tokens": tokens_per_step * values["max_steps"],
        "est_seconds": flops_per_token * tokens_per_step * values["max_steps"] / (peak * utilisation),
        "memory_bytes": memory, "device": device_type, "utilisation": utilisation, "full": full,
        **_worker_memory(device_type),
    }

