"""Import a local Hugging Face GPT-2 checkpoint into our model directory format, and export back.

Only safetensors weights are read (`model.safetensors`, or shards listed in
`model.safetensors.index.json`): a `pytorch_model.bin` is a pickle, which can run code on load, so
it is refused. Our GPT has GPT-2's exact layout, so the mapping is a renaming plus one transpose:
HF stores the attention/MLP projections as `Conv1D` with weights shaped (in, out), where our
`nn.Linear` holds (out, in).

Vocabulary: HF GPT-2 has 50257 rows (50256 BPE tokens + <|endoftext|>); our "gpt2" tokenizer appends
the chat specials (50259 ids) and the embedding is padded to a multiple of 64 (50304 rows). The
import records `hf_vocab_size` in config.json so the export can cut the embedding back to 50257.

Numerics match HF exactly in structure: GELU is the tanh approximation (HF "gelu_new"), and HF's
`layer_norm_epsilon` 1e-5 is torch's LayerNorm default, which our model uses.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from llm.atomic_files import atomic_write_text
from llm.checkpoint import (ADAPTER_ARCHITECTURE, WEIGHTS_FILE, atomic_save_safetensors,
                            read_architecture, read_config, save_model)
from llm.model import GPT, GPTConfig, padded_vocab_size
from llm.model_files import ModelFileError, check_safetensors, read_config_json
from llm.tokenizer import get_tokenizer

HF_GPT2_VOCAB_SIZE = 50257
TOKENIZER_NAME = "gpt2"
# Spellings of GPT-2's tanh-approximated GELU; "gelu" (the exact erf form) is a different function.
GPT2_ACTIVATIONS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
LAYER_NORM_EPSILON = 1e-5
# Buffers some GPT-2 checkpoints carry (the causal mask); ours builds masks on the fly.
IGNORED_HF_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# Per block: our name -> HF name, and whether the weight is a Conv1D that needs transposing.
BLOCK_WEIGHTS = {
    "ln_1.weight": ("ln_1.weight", False), "ln_1.bias": ("ln_1.bias", False),
    "attn.c_attn.weight": ("attn.c_attn.weight", True), "attn.c_attn.bias": ("attn.c_attn.bias", False),
    "attn.c_proj.weight": ("attn.c_proj.weight", True), "attn.c_proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False), "ln_2.bias": ("ln_2.bias", False),
    "mlp.c_fc.weight": ("mlp.c_fc.weight", True), "mlp.c_fc.bias": ("mlp.c_fc.bias", False),
    "mlp.c_proj.weight": ("mlp.c_proj.weight", True), "mlp.c_proj.bias": ("mlp.c_proj.bias", False),
}
TOP_WEIGHTS = {"wte.weight": "wte.weight", "wpe.weight": "wpe.weight",
               "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}


class NotGPT2Error(ValueError):
    """The checkpoint or model directory does not have GPT-2's architecture."""


def _weight_names(n_layer: int) -> dict[str, tuple[str, bool]]:
    """Our state-dict name -> (HF name inside `transformer.`, transpose?)."""
    names = {ours: (hf, False) for ours, hf in TOP_WEIGHTS.items()}
    for i in range(n_layer):
        for ours, (hf, transpose) in BLOCK_WEIGHTS.items():
            names[f"blocks.{i}.{ours}"] = (f"h.{i}.{hf}", transpose)
    return names


def check_hf_gpt2_config(hf_config: dict) -> None:
    """Raise NotGPT2Error, naming every mismatch, unless `hf_config` describes a GPT-2 we can load."""
    problems = []
    if hf_config.get("model_type") != "gpt2":
        problems.append(f"model_type is {hf_config.get('model_type')!r}, not 'gpt2'")
    for key in ("n_positions", "n_embd", "n_layer", "n_head", "vocab_size"):
        if not isinstance(hf_config.get(key), int) or hf_config[key] <= 0:
            problems.append(f"{key} missing or not a positive integer ({hf_config.get(key)!r})")
    if not problems and hf_config["n_embd"] % hf_config["n_head"]:
        problems.append(f"n_embd {hf_config['n_embd']} is not divisible by n_head {hf_config['n_head']}")
    if hf_config.get("vocab_size") != HF_GPT2_VOCAB_SIZE:
        problems.append(f"vocab_size is {hf_config.get('vocab_size')}, not GPT-2's {HF_GPT2_VOCAB_SIZE}: token ids "
                        f"would not match the gpt2 tokenizer")
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in GPT2_ACTIVATIONS:
        problems.append(f"activation_function is {activation!r}; GPT-2 uses 'gelu_new' (tanh GELU)")
    epsilon = hf_config.get("layer_norm_epsilon", LAYER_NORM_EPSILON)
    if abs(epsilon - LAYER_NORM_EPSILON) > 1e-12:
        problems.append(f"layer_norm_epsilon is {epsilon}; ours is {LAYER_NORM_EPSILON}")
    n_inner = hf_config.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf_config.get("n_embd", 0):
        problems.append(f"n_inner is {n_inner}; our MLP is 4 * n_embd wide")
    for key, expected in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                          ("add_cross_attention", False), ("tie_word_embeddings", True)):
        if hf_config.get(key, expected) != expected:
            problems.append(f"{key} is {hf_config[key]!r}; GPT-2 has {expected!r}")
    if problems:
        raise NotGPT2Error("not a GPT-2 checkpoint we can import: " + "; ".join(problems))


def _read_safetensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors file(s), each file checked first (llm/model_files.py)."""
    index = hf_dir / "model.safetensors.index.json"
    if (hf_dir / WEIGHTS_FILE).exists() or (hf_dir / WEIGHTS_FILE).is_symlink():
        files = [hf_dir / WEIGHTS_FILE]
    elif index.exists() or index.is_symlink():
        weight_map = read_config_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelFileError(index.name, "has no weight_map of tensor names to file names")
        shards = sorted(set(weight_map.values()))
        files = [hf_dir / Path(shard).name for shard in shards]  # a name, never a path out of hf_dir
    else:
        pickles = [p.name for p in hf_dir.glob("*.bin")] + [p.name for p in hf_dir.glob("*.pt")]
        hint = f" (found {', '.join(pickles)}: pickle files are refused, convert them to safetensors)" if pickles else ""
        raise FileNotFoundError(f"{hf_dir} has no model.safetensors{hint}")
    tensors = {}
    for file in files:
        check_safetensors(file)
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    return tensors


def import_hf_gpt2(hf_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert a local HF GPT-2 directory (config.json + safetensors) into a model directory."""
    hf_dir = Path(hf_dir)
    hf_config = read_config_json(hf_dir / "config.json")  # ModelFileError names the file and the problem
    check_hf_gpt2_config(hf_config)

    tensors = _read_safetensors(hf_dir)
    # GPT2LMHeadModel saves under "transformer."; the original openai checkpoints (GPT2Model) have no prefix.
    hf_weights = {name.removeprefix("transformer."): t for name, t in tensors.items()}
    hf_lm_head = hf_weights.pop("lm_head.weight", None)

    tokenizer_vocab_size = get_tokenizer(TOKENIZER_NAME).vocab_size
    config = GPTConfig(vocab_size=padded_vocab_size(tokenizer_vocab_size), block_size=hf_config["n_positions"],
                       n_layer=hf_config["n_layer"], n_head=hf_config["n_head"], n_embd=hf_config["n_embd"],
                       dropout=0.0, bias=True, tie_weights=True)
    names = _weight_names(config.n_layer)
    expected_hf = {hf for hf, _ in names.values()}
    missing = sorted(expected_hf - hf_weights.keys())
    unexpected = sorted(k for k in hf_weights.keys() - expected_hf if not k.endswith(IGNORED_HF_SUFFIXES))
    if missing or unexpected:
        raise NotGPT2Error(f"weights in {hf_dir} do not have GPT-2's layout: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")

    state = {}
    for ours, (hf, transpose) in names.items():
        tensor = hf_weights.pop(hf).float()  # popped: a large checkpoint is not held twice
        state[ours] = tensor.t().contiguous() if transpose else tensor
    wte = state["wte.weight"]
    if hf_lm_head is not None and not torch.equal(hf_lm_head.float(), wte):
        raise NotGPT2Error("lm_head.weight differs from wte.weight: untied output embeddings are not GPT-2")
    # New rows (chat specials, then padding) start as the mean embedding: a new special token
    # begins as an "average" token, so its input looks like ordinary text to the model and its
    # output logit is an average one (neither predicted everywhere nor impossible to learn),
    # unlike a random row that could dominate or vanish from the softmax before fine-tuning.
    extra_rows = wte.mean(dim=0, keepdim=True).expand(config.vocab_size - wte.shape[0], -1)
    state["wte.weight"] = torch.cat([wte, extra_rows])
    state["lm_head.weight"] = state["wte.weight"]

    model = GPT(config)
    model.load_state_dict(state)
    return save_model(model, out_dir, TOKENIZER_NAME, extra={"hf_vocab_size": wte.shape[0]})


def export_hf_gpt2(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   data_dir: str | os.PathLike | None = None) -> Path:
    """Write a directory `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` loads.

    A LoRA adapter directory is merged into its base first (`llm.lora.merge_adapter`): HF GPT-2 has
    no adapters, and the merged weights compute what base + adapter compute.

    The vocabulary is cut to `hf_vocab_size` when the model came from HF, else to the tokenizer's
    vocabulary (50257 for "gpt2": its chat specials have no row in HF GPT-2; all ids for others). A chat
    model (config.json "chat": true, written by SFT) keeps the chat specials: for "gpt2" that is 50259
    rows, and <|im_start|> / <|im_end|> must be added to the stock HF tokenizer as ids 50257 / 50258.
    `data_dir` locates a trained tokenizer by name. No tokenizer files are written: for "gpt2" the
    stock HF GPT-2 tokenizer applies.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if read_architecture(model_dir) == ADAPTER_ARCHITECTURE:
        from llm.lora import merge_adapter

        with tempfile.TemporaryDirectory(prefix="merged-") as merged:
            return export_hf_gpt2(merge_adapter(model_dir, merged), out_dir, data_dir=data_dir)
    config = read_config(model_dir)
    model_config = GPTConfig.from_dict(config["model"])
    unknown = sorted(set(config["model"]) - set(GPTConfig().to_dict()))
    if not model_config.bias or unknown:
        raise NotGPT2Error(f"{model_dir} is not GPT-2-shaped (bias={model_config.bias}, "
                           f"unknown options {unknown}): HF GPT-2 cannot hold it")
    with safe_open(str(model_dir / WEIGHTS_FILE), framework="pt", device="cpu") as f:
        state = {name: f.get_tensor(name) for name in f.keys()}
    names = _weight_names(model_config.n_layer)
    expected = set(names) | ({"lm_head.weight"} if not model_config.tie_weights else set())
    if set(state) != expected:
        raise NotGPT2Error(f"{model_dir} weights do not have GPT-2's layout: "
                           f"missing {sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")

    if config["tokenizer"] == TOKENIZER_NAME:
        vocab_size, end_of_text = config.get("hf_vocab_size", HF_GPT2_VOCAB_SIZE), HF_GPT2_VOCAB_SIZE - 1
        if config.get("chat"):  # a chat model keeps <|im_start|> and <|im_end|> (ids 50257, 50258): without
            vocab_size = get_tokenizer(TOKENIZER_NAME).vocab_size  # <|im_end|> it could never end its turn
    else:
        tokenizer = get_tokenizer(config["tokenizer"], data_dir=data_dir)
        vocab_size, end_of_text = config.get("hf_vocab_size", tokenizer.vocab_size), tokenizer.eot_id
    vocab_size = min(vocab_size, model_config.vocab_size)

    hf_state = {}
    for ours, (hf, transpose) in names.items():
        tensor = state[ours]
        if ours == "wte.weight":
            tensor = tensor[:vocab_size]
        hf_state[f"transformer.{hf}"] = (tensor.t() if transpose else tensor).contiguous()
    if not model_config.tie_weights:
        hf_state["lm_head.weight"] = state["lm_head.weight"][:vocab_size].contiguous()

    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": model_config.block_size,
        "n_ctx": model_config.block_size,
        "n_embd": model_config.n_embd,
        "n_layer": model_config.n_layer,
        "n_head": model_config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "resid_pdrop": model_config.dropout,
        "embd_pdrop": model_config.dropout,
        "attn_pdrop": model_config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "tie_word_embeddings": model_config.tie_weights,
        "bos_token_id": end_of_text,  # GPT-2 uses <|endoftext|> for both
        "eos_token_id": end_of_text,
        "dtype": str(state["wte.weight"].dtype).removeprefix("torch."),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(hf_state, out_dir / WEIGHTS_FILE, metadata={"format": "pt"})  # HF checks the tag
    atomic_write_text(out_dir / "config.json", json.dumps(hf_config, indent=2))
    return out_dir


def hf_gpt2_config(config: GPTConfig, **overrides):
    """A `transformers.GPT2Config` of our GPT's dimensions, every vocabulary row kept (no cut: for comparing the
    two implementations on the same ids, not for publishing); `overrides` for the head's task (num_labels...)."""
    from transformers import GPT2Config

    if not config.bias:
        raise NotGPT2Error("a GPT without biases is not GPT-2-shaped: HF GPT-2 cannot hold it")
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, n_inner=None, activation_function="gelu_new",
                      layer_norm_epsilon=LAYER_NORM_EPSILON, resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                      attn_pdrop=config.dropout, tie_word_embeddings=config.tie_weights,
                      bos_token_id=HF_GPT2_VOCAB_SIZE - 1, eos_token_id=HF_GPT2_VOCAB_SIZE - 1, **overrides)


def to_hf_gpt2(model: GPT, model_class=None, **config_overrides):
    """Our GPT as an in-memory transformers GPT-2 with the same weights (copies), by default a
    `GPT2LMHeadModel`; any GPT-2 class with a `transformer` (e.g. `GPT2ForSequenceClassification`, whose
    own head is left as initialised) works. Float32, eval mode; set the head's weights yourself."""
    from transformers import GPT2LMHeadModel

    model_class = model_class or GPT2LMHeadModel
    hf_model = model_class(hf_gpt2_config(model.config, **config_overrides))
    state = model.state_dict()
    hf_state = {hf: (state[ours].t() if transpose else state[ours]).detach().clone().contiguous()
                for ours, (hf, transpose) in _weight_names(model.config.n_layer).items()}
    if not model.config.tie_weights and hasattr(hf_model, "lm_head"):
        hf_model.lm_head.weight.data.copy_(state["lm_head.weight"])
    missing, unexpected = hf_model.transformer.load_state_dict(hf_state, strict=False)
    missing = [name for name in missing if not name.endswith(IGNORED_HF_SUFFIXES)]
    if missing or unexpected:
        raise NotGPT2Error(f"weight mapping to {model_class.__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return hf_model.float().eval()
