"""Token files to batches: shapes, shifting, determinism, resumability, evaluation windows, clear errors."""

import io
import json

import numpy as np
import pytest
import torch

from llm.dataloader import BatchSampler, TokenData, iterate_eval_batches


def write_prepared(directory, train_ids, val_ids, dtype="uint16", tokenizer="synthetic"):
    """A prepared data directory in the format prepare.py writes (docs/architecture.md)."""
    directory.mkdir(parents=True, exist_ok=True)
    np.asarray(train_ids, dtype=dtype).tofile(directory / "train.bin")
    np.asarray(val_ids, dtype=dtype).tofile(directory / "val.bin")
    stats = {"tokenizer": tokenizer, "dtype": dtype, "vocab_size": 512,
             "train": {"tokens": len(train_ids)}, "val": {"tokens": len(val_ids)}}
    (directory / "stats.json").write_text(json.dumps(stats))
    return directory


def test_token_data_reads_the_dtype_named_in_stats(tmp_path):
    write_prepared(tmp_path, [70000, 1, 2], [3, 4], dtype="uint32")
    data = TokenData(tmp_path, "train")
    assert len(data) == 3 and data.tokens.dtype == np.uint32 and int(data.tokens[0]) == 70000
    assert data.tokenizer_name == "synthetic"


def test_batches_are_windows_of_the_file_with_targets_shifted_by_one(tmp_path):
    write_prepared(tmp_path, np.arange(1000), np.arange(100))
    sampler = BatchSampler(TokenData(tmp_path, "train"), batch_size=4, block_size=16, seed=0)
    x, y = sampler.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    # With data = arange, a window starting at s is s, s+1, ...: consecutive, and y = x + 1.
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))
    assert torch.equal(y, x + 1)
    assert int(y.max()) <= 999


def test_same_seed_same_batches_and_global_seed_does_not_matter(tmp_path):
    write_prepared(tmp_path, np.arange(5000), np.arange(100))
    data = TokenData(tmp_path, "train")
    torch.manual_seed(1)
    first = BatchSampler(data, 4, 8, seed=7).next_batch()[0]
    torch.manual_seed(2)  # the sampler has its own generator: model code drawing random numbers can't shift it
    again = BatchSampler(data, 4, 8, seed=7).next_batch()[0]
    other = BatchSampler(data, 4, 8, seed=8).next_batch()[0]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampler_resumes_from_its_state_dict(tmp_path):
    write_prepared(tmp_path, np.arange(5000), np.arange(100))
    data = TokenData(tmp_path, "train")
    original = BatchSampler(data, 4, 8, seed=3)
    for _ in range(5):
        original.next_batch()
    # The state goes through torch.save / torch.load(weights_only=True), as in a checkpoint.
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = BatchSampler(data, 4, 8, seed=999)  # a different seed: the state must win
    resumed.load_state_dict(state)
    assert resumed.batches_served == 5
    for _ in range(3):
        assert torch.equal(resumed.next_batch()[0], original.next_batch()[0])


def test_eval_batches_cover_the_split_in_contiguous_windows(tmp_path):
    write_prepared(tmp_path, np.arange(50), np.arange(100))
    data = TokenData(tmp_path, "val")
    batches = list(iterate_eval_batches(data, batch_size=4, block_size=10))
    # (100 - 1) // 10 = 9 windows: batches of 4, 4, 1
    assert [x.shape[0] for x, _ in batches] == [4, 4, 1]
    xs = torch.cat([x for x, _ in batches]).flatten()
    ys = torch.cat([y for _, y in batches]).flatten()
    assert torch.equal(xs, torch.arange(90)) and torch.equal(ys, torch.arange(1, 91))
    again = list(iterate_eval_batches(data, batch_size=4, block_size=10))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    capped = list(iterate_eval_batches(data, batch_size=4, block_size=10, max_batches=2))
    assert len(capped) == 2


def test_too_short_split_names_the_file_the_count_and_the_fix(tmp_path):
    write_prepared(tmp_path, np.arange(10), np.arange(3))
    with pytest.raises(ValueError) as error:
        BatchSampler(TokenData(tmp_path, "train"), batch_size=2, block_size=16)
    message = str(error.value)
    assert "train.bin" in message and "10 tokens" in message
    assert "--block-size" in message and "at most 9" in message
    with pytest.raises(ValueError, match=r"val\.bin holds only 3 tokens"):
        next(iterate_eval_batches(TokenData(tmp_path, "val"), 2, 8))


def test_empty_split_and_broken_files_are_reported(tmp_path):
    write_prepared(tmp_path, np.arange(10), [])
    with pytest.raises(ValueError, match="add more documents"):
        next(iterate_eval_batches(TokenData(tmp_path, "val"), 2, 4))
    (tmp_path / "train.bin").write_bytes(b"\x00\x01\x02")  # 3 bytes is not a whole number of uint16
    with pytest.raises(ValueError, match="truncated"):
        TokenData(tmp_path, "train")
    (tmp_path / "stats.json").unlink()
    with pytest.raises(FileNotFoundError, match="stats.json"):
        TokenData(tmp_path, "train")
