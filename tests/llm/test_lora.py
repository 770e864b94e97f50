"""LoRA through peft on our GPT: what is trained, how adapters are saved, loaded, merged and exported.

Each adapter here gets random B matrices (peft starts B at zero, which would make every comparison
trivially "base == adapter"), so a mistake in saving, loading or merging shows in the logits."""

import json
import shutil

import pytest
import torch

from llm.checkpoint import (ADAPTER_ARCHITECTURE, load_adapter, load_model, load_weights, read_architecture,
                            read_config, save_model)
from llm.lora import apply_lora, merge_adapter, save_adapter, target_modules, trainable_parameter_count
from llm.model import GPT, config_from_preset
from llm.sft_config import SFTConfig

VOCAB = 300  # a trained tokenizer's size; padded to 320 rows


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_gpt(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config_from_preset("tiny", VOCAB, block_size=32, **overrides))
    with torch.no_grad():  # a fresh GPT has zero biases and unit norms: randomise them so every tensor matters
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def with_random_adapter(model: GPT, sft_config: SFTConfig | None = None, seed=1):
    peft_model = apply_lora(model, sft_config or SFTConfig(lora_dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return peft_model.eval()


def logits_of(model, ids):
    with torch.no_grad():
        return model(ids)[0]


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(2))


@pytest.fixture
def base_dir(tmp_path):
    return save_model(tiny_gpt(), tmp_path / "models" / "base", "gpt2", extra={"preset": "tiny"})


def test_lora_wraps_the_projections_and_trains_only_the_adapters(ids):
    model = tiny_gpt()
    before = logits_of(model, ids)
    peft_model = apply_lora(model, SFTConfig(lora_r=4))
    # r x (in + out) per adapted matrix: c_attn 64->192, attn c_proj 64->64, c_fc 64->256, mlp c_proj 256->64.
    per_layer = 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))
    trainable, total = trainable_parameter_count(peft_model)
    assert trainable == 2 * per_layer
    assert total == sum(p.numel() for p in tiny_gpt().parameters()) + trainable  # the tied matrix counted once
    assert all(("lora_A" in name or "lora_B" in name) == param.requires_grad
               for name, param in peft_model.named_parameters())
    # B starts at zero: the wrapped model computes exactly what the base did.
    assert torch.equal(logits_of(peft_model.eval(), ids), before)
    # peft added no input-embedding hook (our GPT has no get_input_embeddings), and the tie survived.
    gpt = peft_model.get_base_model()
    assert not gpt.wte._forward_hooks and gpt.lm_head.weight is gpt.wte.weight
    assert not gpt.wte.weight.requires_grad


def test_lora_targets_choose_the_projections():
    assert target_modules("attn") == ["attn.c_attn", "attn.c_proj"]
    assert target_modules("mlp") == ["mlp.c_fc", "mlp.c_proj"]
    peft_model = apply_lora(tiny_gpt(), SFTConfig(lora_targets="mlp"))
    adapted = {name.split(".lora_")[0].removeprefix("base_model.model.")
               for name, _ in peft_model.named_parameters() if "lora_" in name}
    assert adapted == {f"blocks.{i}.mlp.{m}" for i in range(2) for m in ("c_fc", "c_proj")}
    with pytest.raises(ValueError, match="attn and/or mlp"):
        target_modules("everything")


def test_the_peft_model_takes_our_arguments_and_kv_cache(ids):
    """No HF keyword path: targets, kv_cache and last_logits_only pass straight through."""
    peft_model = with_random_adapter(tiny_gpt())
    logits, loss = peft_model(ids, ids)
    assert loss is not None and logits.shape == (2, 20, 320)
    cache = peft_model.new_kv_cache(2)
    first, _ = peft_model(ids[:, :12], kv_cache=cache)
    rest, _ = peft_model(ids[:, 12:], kv_cache=cache)
    full = logits_of(peft_model, ids)
    assert (torch.cat([first, rest], dim=1) - full).abs().max() < 1e-5


def test_adapter_saves_loads_and_merges_to_the_same_logits(base_dir, tmp_path, ids):
    base_bytes = (base_dir / "model.safetensors").read_bytes()
    peft_model = with_random_adapter(load_weights(base_dir))
    expected = logits_of(peft_model, ids)
    adapter_dir = save_adapter(peft_model, tmp_path / "runs" / "sft", base_dir, "gpt2", extra={"chat": True})

    assert sorted(p.name for p in adapter_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                            "config.json"]
    config = read_config(adapter_dir)
    assert config["architecture"] == ADAPTER_ARCHITECTURE == read_architecture(adapter_dir)
    assert config["base_model"] == "../../models/base"  # relative: the data directory can move
    assert config["model"] == read_config(base_dir)["model"] and config["tokenizer"] == "gpt2"
    assert config["preset"] == "tiny" and config["chat"] is True  # inherited from the base / given
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "../../models/base"

    # Unmerged (peft) and merged (load_model) both compute what the trained adapter computed.
    reloaded = load_adapter(load_weights(base_dir), adapter_dir).eval()
    assert torch.equal(logits_of(reloaded, ids), expected)
    merged, tokenizer = load_model(adapter_dir)
    assert type(merged) is GPT and tokenizer.name == "gpt2"
    assert (logits_of(merged, ids) - expected).abs().max() < 1e-5
    assert merged.lm_head.weight is merged.wte.weight

    # A merged directory is a plain full model.
    merged_dir = merge_adapter(adapter_dir, tmp_path / "merged")
    assert read_architecture(merged_dir) == "gpt" and not (merged_dir / "adapter_config.json").exists()
    assert read_config(merged_dir)["preset"] == "tiny" and read_config(merged_dir)["chat"] is True
    assert (logits_of(load_model(merged_dir)[0], ids) - expected).abs().max() < 1e-5
    assert (base_dir / "model.safetensors").read_bytes() == base_bytes  # the base is only read

    # Moved away from its base, the adapter still loads when the caller names the base.
    moved = tmp_path / "elsewhere" / "deeper" / "adapter"
    shutil.copytree(adapter_dir, moved)
    with pytest.raises(FileNotFoundError, match="LoRA adapter of ../../models/base"):
        load_model(moved)
    assert (logits_of(load_model(moved, base_model_dir=base_dir)[0], ids) - expected).abs().max() < 1e-5


def test_directories_without_an_architecture_key_load_as_full_models(base_dir, ids):
    config = read_config(base_dir)
    assert config["architecture"] == "gpt"
    del config["architecture"]
    (base_dir / "config.json").write_text(json.dumps(config))
    assert read_architecture(base_dir) == "gpt"
    model, _ = load_model(base_dir)
    assert torch.equal(logits_of(model, ids), logits_of(tiny_gpt().eval(), ids))
    config["architecture"] = "mamba"
    (base_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mamba"):
        load_model(base_dir)


def test_an_adapter_on_an_adapter_loads_through_the_chain(base_dir, tmp_path, ids):
    first = save_adapter(with_random_adapter(load_weights(base_dir), seed=1), tmp_path / "first", base_dir, "gpt2")
    second_model = with_random_adapter(load_weights(first), seed=2)
    expected = logits_of(second_model, ids)
    second = save_adapter(second_model, tmp_path / "second", first, "gpt2")
    assert read_config(second)["base_model"] == "../first"
    assert (logits_of(load_model(second)[0], ids) - expected).abs().max() < 1e-5


def test_export_hf_of_an_adapter_merges_it_and_transformers_agrees(tmp_path, ids):
    transformers = pytest.importorskip("transformers")
    from llm.hf_gpt2 import export_hf_gpt2
    from llm.tokenizer import get_tokenizer

    vocab = get_tokenizer("gpt2").vocab_size
    torch.manual_seed(0)
    base = GPT(config_from_preset("tiny", vocab, block_size=32))
    base_dir = save_model(base, tmp_path / "base", "gpt2")
    peft_model = with_random_adapter(load_weights(base_dir))
    ids = torch.randint(0, vocab, (2, 20), generator=torch.Generator().manual_seed(3))
    expected = logits_of(peft_model, ids)
    adapter_dir = save_adapter(peft_model, tmp_path / "adapter", base_dir, "gpt2", extra={"chat": True})

    hf_dir = export_hf_gpt2(adapter_dir, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    # A chat model keeps <|im_start|> and <|im_end|>: 50257 GPT-2 ids + 2 chat specials.
    assert hf.config.vocab_size == vocab == 50259
    with torch.no_grad():
        theirs = hf(ids).logits
    assert (theirs - expected[..., :vocab]).abs().max() < 1e-4
