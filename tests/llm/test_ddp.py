"""Data-parallel training (llm/distributed.py): W ranks with grad_accum A train exactly as one process with grad_accum
W×A on the same stream (pretraining, SFT, DPO, reward, KTO, GRPO); a checkpoint written by 2 ranks resumes on 1; the stream is
shared out without a gap or a repeat. The runs are the real command line under `torchrun --nproc_per_node=2` on
the CPU (gloo)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llm.chat_batches import ConversationBatches
from llm.checkpoint import save_model
from llm.cli import main
from llm.dataloader import BatchSampler, TokenData
from llm.distributed import RankShard, Ranks, ranks_from_environment, shard
from llm.model import GPT, config_from_preset
from llm.tokenizer import get_tokenizer
from tests.support.torchrun_runs import losses, make_data_dir, make_prepared, pretrain_args, torchrun

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOSS_TOLERANCE = 1e-5


def test_ranks_share_out_the_one_stream_without_gap_or_repeat(tmp_path):
    directory = tmp_path / "prepared"
    directory.mkdir()
    np.arange(5000, dtype=np.uint16).tofile(directory / "train.bin")
    (directory / "stats.json").write_text(json.dumps({"tokenizer": "synthetic", "dtype": "uint16"}))

    def sampler():
        return BatchSampler(TokenData(directory, "train"), 3, 8, seed=5)

    single = sampler()
    expected = [single.next_batch()[0] for _ in range(6)]
    ranks = [RankShard(sampler(), rank, 2) for rank in range(2)]
    taken = [ranks[index % 2].next_batch()[0] for index in range(6)]
    for want, got in zip(expected, taken):
        assert torch.equal(want, got)
    # After each round every rank's source stands where the single stream does: rank 0's state is the run's.
    assert ranks[0].state_dict()["batches_served"] == ranks[1].state_dict()["batches_served"] == 6
    assert torch.equal(ranks[1].state_dict()["generator"], single.state_dict()["generator"])

    conversations = [(np.arange(i + 2), np.arange(i + 2)) for i in range(7)]
    whole = ConversationBatches(conversations, 2, seed=3, pad_id=0)
    halves = [RankShard(ConversationBatches(conversations, 2, seed=3, pad_id=0), rank, 2) for rank in range(2)]
    for index in range(10):  # crosses epochs
        assert torch.equal(whole.next_batch()["inputs"], halves[index % 2].next_batch()["inputs"])
    assert halves[0].state_dict() == halves[1].state_dict()


def test_without_world_size_nothing_is_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = ranks_from_environment()
    assert ranks == Ranks() and not ranks.active and ranks.is_main
    source = object()
    assert shard(source, ranks) is source
    assert ranks.agree_to_stop(None) is False and ranks.agree_to_stop(lambda: True) is True


def test_a_half_set_environment_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK is not"):
        ranks_from_environment()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent"):
        ranks_from_environment()


# ----------------------------------------------------------------------------- the real runs

@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path)


@pytest.fixture
def prepared(data_dir, tmp_path):
    return make_prepared(data_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_ranks_pretrain_as_one_process_with_accumulation_and_resume_on_one(prepared, tmp_path):
    # One process, 4 micro-batches per step; then resumed to step 8.
    alone = tmp_path / "alone"
    assert main(pretrain_args(prepared, alone, 5, 4)) == 0
    assert main(pretrain_args(prepared, alone, 8, 4) + ["--resume"]) == 0
    # Two ranks x 2 micro-batches: the same global batch of 4 micro-batches, the same stream.
    ranks = tmp_path / "ranks"
    result = torchrun(pretrain_args(prepared, ranks, 5, 2), cwd=tmp_path)
    assert "data parallel: 2 ranks" in result.stdout + result.stderr
    assert result.stdout.count('"model_dir"') == 1  # rank 0 alone prints its result
    two = losses(ranks)
    assert sorted(two) == [1, 2, 3, 4, 5]
    one = losses(alone)
    for step in range(1, 6):
        assert abs(two[step] - one[step]) < LOSS_TOLERANCE, (step, two[step], one[step])
    assert two[5] < two[1] - 0.1  # and it learnt something
    records = [json.loads(line) for line in (ranks / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["tokens"] == 5 * 4 * 2 * 32  # every rank's tokens are counted
    assert (ranks / "model.safetensors").is_file() and (ranks / "checkpoint" / "checkpoint.json").is_file()

    # The 2-rank checkpoint resumes on 1 rank (grad_accum 4: the same global batch): the data position and the
    # optimizer's moments carry over, so steps 6..8 are those of the run that never changed its world size.
    assert main(pretrain_args(prepared, ranks, 8, 4) + ["--resume"]) == 0
    resumed = losses(ranks)
    for step in range(6, 9):
        assert abs(resumed[step] - one[step]) < LOSS_TOLERANCE, (step, resumed[step], one[step])


def tiny_base(data_dir, tmp_path, extra=None):
    """The fine-tuning runs' start: a tiny GPT (seed 0) on the test's trained BPE, saved under tmp_path/base."""
    tokenizer = get_tokenizer("ddp-bpe", data_dir=data_dir)
    torch.manual_seed(0)
    return save_model(GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)), tmp_path / "base",
                      "ddp-bpe", extra=extra)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_ranks_fine_tune_as_one_process_with_accumulation(data_dir, tmp_path):
    base_dir = tiny_base(data_dir, tmp_path)
    rng = np.random.default_rng(1)
    colours, animals = ["red", "green", "blue", "gold"], ["cat", "dog", "owl", "fox", "bear"]
    chats = tmp_path / "chat.jsonl"
    chats.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"code for the {c} {a}?"},
        {"role": "assistant", "content": f"CODE {a} {c}" + " ok" * int(rng.integers(0, 4))}]}) + "\n"
        for c in colours for a in animals))

    def sft_args(out, grad_accum):
        return ["sft", "--model", str(base_dir), "--data", str(chats), "--out", str(out), "--method", "full",
                "--batch-size", "2", "--grad-accum", str(grad_accum), "--max-steps", "5", "--lr", "1e-3",
                "--warmup", "1", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "0",
                "--eval-batches", "2", "--device", "cpu", "--compile", "false", "--data-dir", str(data_dir)]

    assert main(sft_args(tmp_path / "alone", 4)) == 0
    torchrun(sft_args(tmp_path / "ranks", 2), cwd=tmp_path)
    one, two = losses(tmp_path / "alone"), losses(tmp_path / "ranks")
    assert sorted(two) == [1, 2, 3, 4, 5]
    for step in range(1, 6):
        assert abs(two[step] - one[step]) < LOSS_TOLERANCE, (step, two[step], one[step])


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("command", ["dpo", "reward", "kto"])
def test_two_ranks_train_on_preferences_as_one_process(command, data_dir, tmp_path):
    # DPO's objective calls hidden_states, lm_head and peft's disable_adapter, not model(...); a reward model never
    # uses the LM head: DDP must still average exactly what one process would have accumulated.
    base_dir = tiny_base(data_dir, tmp_path, extra={"chat": True})
    rng = np.random.default_rng(2)
    words = "the quick brown fox jumps over a lazy dog".split()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(words, 5)), "chosen": "yes " + " ".join(
        rng.choice(words, 4)), "rejected": "no " + " ".join(rng.choice(words, 3))}) + "\n" for _ in range(40)))

    def args(out, grad_accum):
        return [command, "--model", str(base_dir), "--data", str(pairs), "--out", str(out), "--method", "lora",
                "--lora-dropout", "0", "--batch-size", "2", "--grad-accum", str(grad_accum), "--max-steps", "4",
                "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "0", "--device", "cpu",
                "--compile", "false", "--data-dir", str(data_dir)]

    assert main(args(tmp_path / "alone", 2)) == 0
    torchrun(args(tmp_path / "ranks", 1), cwd=tmp_path)
    one, two = losses(tmp_path / "alone"), losses(tmp_path / "ranks")
    assert sorted(two) == [1, 2, 3, 4]
    for step in two:
        assert abs(two[step] - one[step]) < LOSS_TOLERANCE, (step, two[step], one[step])


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_ranks_run_grpo_as_one_process(data_dir, tmp_path):
    # GRPO samples its own answers: each prompt's from a generator seeded for that prompt, so rank r sampling its
    # share of the step's prompts gives the answers one process gives them, and the update is averaged as DPO's.
    base_dir = tiny_base(data_dir, tmp_path, extra={"chat": True})
    rng = np.random.default_rng(3)
    words = "the quick brown fox jumps over a lazy dog".split()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(words, 5)), "answer": str(rng.choice(words))})
                               + "\n" for _ in range(16)))

    def args(out, grad_accum):
        return ["grpo", "--model", str(base_dir), "--data", str(prompts), "--out", str(out), "--method", "lora",
                "--lora-dropout", "0", "--verifier", "contains", "--num-generations", "4",
                "--max-completion-length", "8", "--eval-prompts", "1", "--batch-size", "2", "--grad-accum",
                str(grad_accum), "--max-steps", "3", "--log-every", "1", "--eval-every", "0", "--checkpoint-every",
                "0", "--device", "cpu", "--compile", "false", "--data-dir", str(data_dir)]

    assert main(args(tmp_path / "alone", 2)) == 0
    torchrun(args(tmp_path / "ranks", 1), cwd=tmp_path)
    # The loss of a GRPO step taken on the policy that sampled is 0 (ratio 1, advantages centred in each group),
    # so the check is on what the step does: the same rewards and answer lengths, the same all-reduced gradient
    # norm, and the same adapter at the end.
    watched = ("loss", "grad_norm", "reward", "reward_std", "completions/mean_length")
    one, two = ({row["step"]: row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                 if "grad_norm" in row} for run in (tmp_path / "alone", tmp_path / "ranks"))
    assert sorted(two) == [1, 2, 3] and all(one[step]["reward_std"] > 0 for step in one)  # groups that teach
    for step in two:
        for name in watched:
            assert abs(two[step][name] - one[step][name]) < LOSS_TOLERANCE, (step, name, two[step], one[step])
    alone, ranks = (load_file(str(run / "adapter_model.safetensors"))
                    for run in (tmp_path / "alone", tmp_path / "ranks"))
    assert alone.keys() == ranks.keys()
    assert max((alone[name] - ranks[name]).abs().max().item() for name in alone) < LOSS_TOLERANCE
