"""Hugging Face GPT-2 import/export: same logits as transformers both ways, exact round trip, refusals."""

import json

import pytest
import torch
from safetensors.torch import load_file

from llm.checkpoint import load_model, read_config
from llm.hf_gpt2 import NotGPT2Error, export_hf_gpt2, import_hf_gpt2
from llm.model import padded_vocab_size

transformers = pytest.importorskip("transformers")

HF_VOCAB = 50257


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=HF_VOCAB)
    model = transformers.GPT2LMHeadModel(config).eval()
    # A fresh HF model has zero biases and unit LayerNorms: randomise them so a mapping or
    # transposition mistake in any tensor shows up in the logits.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def imported_dir(hf_dir, tmp_path_factory):
    return import_hf_gpt2(hf_dir, tmp_path_factory.mktemp("ours") / "model")


def hf_logits(directory, ids):
    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(ids).logits


def test_import_gives_the_same_logits_as_transformers(hf_dir, imported_dir):
    ids = torch.randint(0, HF_VOCAB, (2, 50), generator=torch.Generator().manual_seed(1))
    model, tokenizer = load_model(imported_dir)
    with torch.no_grad():
        ours, _ = model(ids)
    expected = hf_logits(hf_dir, ids)
    assert (ours[..., :HF_VOCAB] - expected).abs().max() < 1e-4

    config = read_config(imported_dir)
    assert config["tokenizer"] == "gpt2" and tokenizer.name == "gpt2"
    assert config["hf_vocab_size"] == HF_VOCAB
    assert model.config.vocab_size == padded_vocab_size(tokenizer.vocab_size) == 50304
    assert model.config.block_size == 128 and model.lm_head.weight is model.wte.weight
    # New rows (chat specials + padding) are the mean of the GPT-2 embeddings.
    wte = model.wte.weight.detach()
    mean = wte[:HF_VOCAB].mean(dim=0)
    torch.testing.assert_close(wte[HF_VOCAB:], mean.expand(50304 - HF_VOCAB, -1))


def test_original_openai_layout_without_prefix_and_with_mask_buffers_imports(hf_dir, imported_dir, tmp_path):
    # The openai-community/gpt2 files were saved from GPT2Model: no "transformer." prefix, no
    # lm_head, and the causal-mask buffers "h.N.attn.bias" stored as weights.
    from safetensors.torch import save_file

    hf = write_hf_dir(tmp_path / "openai", n_layer=2, n_embd=64, n_positions=128)
    state = {name.removeprefix("transformer."): t for name, t in load_file(str(hf_dir / "model.safetensors")).items()
             if name != "lm_head.weight"}
    for layer in range(2):
        state[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    model, _ = load_model(import_hf_gpt2(hf, tmp_path / "ours"))
    reference, _ = load_model(imported_dir)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_export_loads_in_transformers_with_the_same_logits(hf_dir, imported_dir, tmp_path):
    out = export_hf_gpt2(imported_dir, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["vocab_size"] == HF_VOCAB
    ids = torch.randint(0, HF_VOCAB, (2, 50), generator=torch.Generator().manual_seed(2))
    assert (hf_logits(out, ids) - hf_logits(hf_dir, ids)).abs().max() < 1e-4


def test_round_trip_tensors_are_equal(hf_dir, imported_dir, tmp_path):
    out = export_hf_gpt2(imported_dir, tmp_path / "exported")
    original = load_file(str(hf_dir / "model.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    original.pop("lm_head.weight", None)  # tied: may or may not be stored
    exported.pop("lm_head.weight", None)
    assert original.keys() == exported.keys()
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name


def test_export_of_a_native_gpt2_model_cuts_the_vocabulary_to_gpt2s(tmp_path):
    from llm.checkpoint import save_model
    from llm.model import GPT, GPTConfig

    save_model(GPT(GPTConfig(vocab_size=50304, block_size=32, n_layer=1, n_head=2, n_embd=16)), tmp_path / "m", "gpt2")
    out = export_hf_gpt2(tmp_path / "m", tmp_path / "hf")
    model = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert model.config.vocab_size == HF_VOCAB and model.config.n_positions == 32


def write_hf_dir(path, **overrides):
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=HF_VOCAB).to_dict()
    config.update(overrides)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("overrides, message", [
    (dict(model_type="llama"), "model_type is 'llama'"),
    (dict(activation_function="relu"), "activation_function is 'relu'"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    (dict(n_inner=100), "n_inner"),
    (dict(vocab_size=32000), "vocab_size is 32000"),
])
def test_a_non_gpt2_config_is_refused_with_a_clear_message(tmp_path, overrides, message):
    with pytest.raises(NotGPT2Error, match=message):
        import_hf_gpt2(write_hf_dir(tmp_path / "hf", **overrides), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickle_weights_are_refused(tmp_path):
    hf = write_hf_dir(tmp_path / "hf")
    (hf / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle files are refused"):
        import_hf_gpt2(hf, tmp_path / "out")


def test_weights_that_do_not_match_the_layout_are_refused(hf_dir, tmp_path):
    from safetensors.torch import save_file

    hf = write_hf_dir(tmp_path / "hf", n_layer=2, n_embd=64, n_positions=128)
    state = load_file(str(hf_dir / "model.safetensors"))
    state.pop("transformer.h.1.mlp.c_fc.weight")
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(NotGPT2Error, match="h.1.mlp.c_fc.weight"):
        import_hf_gpt2(hf, tmp_path / "out")
