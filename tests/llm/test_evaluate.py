"""Bits per byte and validation loss, checked against hand computations."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.checkpoint import save_model
from llm.dataloader import TokenData, iterate_eval_batches
from llm.evaluate import bits_per_byte, evaluate, evaluate_loss
from llm.model import GPT, config_from_preset
from llm.tokenizer import get_tokenizer, train_tokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_prepared(directory, tokenizer, train_docs, val_docs, tokenizer_name=None):
    """The prepared-directory format of docs/architecture.md: <|endoftext|> before every document."""
    directory.mkdir(parents=True, exist_ok=True)
    stats = {"tokenizer": tokenizer_name or tokenizer.name, "dtype": "uint16", "vocab_size": tokenizer.vocab_size}
    for split, docs in (("train", train_docs), ("val", val_docs)):
        ids = [i for doc in docs for i in [tokenizer.eot_id, *tokenizer.encode(doc)]]
        np.asarray(ids, dtype=np.uint16).tofile(directory / f"{split}.bin")
        stats[split] = {"documents": len(docs), "tokens": len(ids), "bytes": sum(len(d.encode()) for d in docs)}
    (directory / "stats.json").write_text(json.dumps(stats))
    return directory


class UniformLM(nn.Module):
    """Equal logits for every id: cross-entropy is exactly ln(vocab_size) for every target."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.vocab_size), None


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    corpus = ["the cat sat on the mat. the dog ate a bone. " * 30, "naïve café owners serve crème brûlée. " * 30]
    tokenizer = train_tokenizer(iter(corpus), 300, data_dir / "tokenizers" / "tiny-bpe", name="tiny-bpe")
    return tokenizer, data_dir


def test_bits_per_byte_formula():
    assert bits_per_byte(8 * math.log(2), 8) == pytest.approx(1.0)
    assert bits_per_byte(3.0, 2) == pytest.approx(3.0 / (math.log(2) * 2))
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


@pytest.mark.slow  # loading the GPT-2 vocabulary takes a few seconds
def test_bpb_of_a_uniform_model_on_known_text_matches_hand_computation(tmp_path):
    gpt2 = get_tokenizer("gpt2")
    assert gpt2.encode("Hello world") == [15496, 995]
    # val.bin = [eot, Hello, " world", eot, <"naïve café" tokens>]; one window covers every target.
    docs = ["Hello world", "naïve café"]
    prepared = write_prepared(tmp_path, gpt2, docs, docs)
    data = TokenData(prepared, "val")
    n_text_tokens = 2 + len(gpt2.encode("naïve café"))
    assert len(data) == n_text_tokens + 2
    text_bytes = 11 + 12  # "naïve café": 10 characters, ï and é take 2 UTF-8 bytes each
    vocab = 50304
    totals = evaluate_loss(UniformLM(vocab), iterate_eval_batches(data, 1, len(data) - 1),
                           gpt2.token_bytes(), "cpu")
    # Targets: every token after the first eot. The second eot is a target but 0 bytes and no bpb nats.
    assert totals["bytes"] == text_bytes
    assert totals["tokens"] == n_text_tokens + 1
    assert totals["nats"] == pytest.approx((n_text_tokens + 1) * math.log(vocab))
    assert totals["bpb_nats"] == pytest.approx(n_text_tokens * math.log(vocab))
    expected_bpb = n_text_tokens * math.log(vocab) / (math.log(2) * text_bytes)
    result = evaluate(UniformLM(vocab).eval(), prepared, tokenizer=gpt2, block_size=len(data) - 1, device="cpu")
    assert result["val_bpb"] == pytest.approx(expected_bpb)
    assert result["val_loss"] == pytest.approx(math.log(vocab))
    assert result["perplexity"] == pytest.approx(vocab)


def test_ignored_targets_carry_no_loss_and_no_bytes():
    token_bytes = np.array([0, 1, 2, 3])
    x = torch.tensor([[0, 1, 2]])
    y = torch.tensor([[1, -100, 3]])
    totals = evaluate_loss(UniformLM(4), [(x, y)], token_bytes, "cpu")
    assert totals["tokens"] == 2 and totals["bytes"] == 1 + 3
    assert totals["nats"] == pytest.approx(2 * math.log(4))


def test_evaluate_a_model_directory_equals_direct_cross_entropy(tmp_path, small_tokenizer):
    tokenizer, data_dir = small_tokenizer
    docs = ["the cat ate the mat.", "crème brûlée for the dog.", "a bone on the mat."] * 4
    prepared = write_prepared(tmp_path / "prepared", tokenizer, docs, docs)
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=16))
    save_model(model, tmp_path / "model", "tiny-bpe")

    result = evaluate(tmp_path / "model", prepared, batch_size=2, block_size=16, device="cpu", data_dir=data_dir)

    ids = torch.from_numpy(np.fromfile(prepared / "val.bin", dtype=np.uint16).astype(np.int64))
    windows = (len(ids) - 1) // 16
    x = ids[:windows * 16].view(windows, 16)
    y = ids[1:windows * 16 + 1].view(windows, 16)
    with torch.no_grad():
        logits, _ = model.eval()(x)
        per_token = F.cross_entropy(logits.view(-1, logits.size(-1)), y.flatten(), reduction="none")
    text = torch.from_numpy(tokenizer.token_bytes()[y.flatten().numpy()]).to(torch.int64)
    assert result["tokens"] == windows * 16
    assert result["val_loss"] == pytest.approx(per_token.mean().item(), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert result["val_bpb"] == pytest.approx(
        per_token[text > 0].sum().item() / (math.log(2) * text.sum().item()), rel=1e-5)
    # An untrained model is close to uniform over the padded vocabulary.
    assert abs(result["val_loss"] - math.log(model.config.vocab_size)) < 0.5


def test_evaluate_refuses_data_prepared_with_another_tokenizer(tmp_path, small_tokenizer):
    tokenizer, data_dir = small_tokenizer
    prepared = write_prepared(tmp_path / "prepared", tokenizer, ["the cat"] * 20, ["the mat"] * 20,
                              tokenizer_name="gpt2")
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=16))
    save_model(model, tmp_path / "model", "tiny-bpe")
    with pytest.raises(ValueError, match="prepared with 'gpt2'"):
        evaluate(tmp_path / "model", prepared, device="cpu", data_dir=data_dir)
