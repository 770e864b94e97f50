"""Full sharding (llm/sharding.py, `--parallelism fsdp`): 2 ranks that each keep half of every weight, gradient and
AdamW moment train as one process with twice the accumulation, write the model and checkpoint a single process
writes, and resume on 1 process or on 2 sharded ranks; LoRA, DPO and GRPO with FSDP are refused when the run is
configured. The runs are the real command line under `torchrun --nproc_per_node=2` on the CPU (gloo). Reward
models with all weights were checked by hand the same way (losses equal to 4e-7 over 4 steps), not here.

Tolerance: the sharded ranks sum the same float32 gradients in another order (each rank's micro-batches, then a
reduce-scatter that averages the two ranks' slices, where one process sums four micro-batches), so the losses
differ in their last bits: 5e-7 measured over 8 steps on losses near 5 (float32's spacing there is 4.8e-7). The
bound is DDP's (tests/llm/test_ddp.py), 1e-5: 20 such spacings, far below what one wrong micro-batch, a missing
average or a stale weight would make (their first step alone moves the loss by more than 1e-2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llm.checkpoint import save_model
from llm.cli import main
from llm.model import GPT, config_from_preset
from llm.dpo_config import DPO_DEFAULTS
from llm.memory import fsdp_gathered_params, fsdp_shards, gpt_parameter_count, training_memory
from llm.grpo_config import GRPO_DEFAULTS
from llm.kto_config import KTO_DEFAULTS
from llm.reward_config import REWARD_DEFAULTS
from llm.sft_config import SFT_DEFAULTS
from llm.tokenizer import get_tokenizer
from tests.support.torchrun_runs import TOKENIZER, losses, make_data_dir, make_prepared, pretrain_args, torchrun

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOSS_TOLERANCE = 1e-5
FSDP = ["--parallelism", "fsdp"]


def test_lora_with_fsdp_is_refused_when_the_run_is_configured():
    with pytest.raises(ValueError, match="parallelism fsdp trains all weights"):
        SFT_DEFAULTS.train_config("lora", parallelism="fsdp")
    assert SFT_DEFAULTS.train_config("full", parallelism="fsdp").parallelism == "fsdp"
    assert SFT_DEFAULTS.train_config("lora").parallelism == "ddp"
    # Kinds whose rank 0 runs the model alone or whose ranks sample answers of their own lengths refuse FSDP.
    for defaults, why in ((DPO_DEFAULTS, "degeneration watch"), (KTO_DEFAULTS, "degeneration watch"),
                          (GRPO_DEFAULTS, "different lengths")):
        with pytest.raises(ValueError, match=f"fsdp is not supported here: .*{why}"):
            defaults.train_config("full", parallelism="fsdp")
    assert REWARD_DEFAULTS.train_config("full", parallelism="fsdp").parallelism == "fsdp"


def test_the_memory_estimate_splits_what_fsdp_splits():
    shape = dict(n_layer=12, n_embd=768, vocab_size=50304, batch_size=8, length=1024, device_type="cuda")
    total = gpt_parameter_count(12, 768, 50304, 1024)
    whole = training_memory(total_params=total, trainable_params=total, **shape)
    gathered = fsdp_gathered_params(768, 50304, 1024)
    quarter = training_memory(total_params=total, trainable_params=total, shards=4, gathered_params=gathered, **shape)
    # Weights, gradients and moments: a quarter each, plus the root and a block in full with their gradients.
    assert quarter.weights + quarter.training == pytest.approx(16 * total / 4 + 8 * gathered, rel=1e-6)
    assert quarter.weights + quarter.training < 0.45 * (whole.weights + whole.training)
    assert quarter.activations == whole.activations and quarter.logits == whole.logits  # per rank, as before
    assert fsdp_shards({"parallelism": "fsdp", "devices": 2, "nodes": 2}) == 4
    assert fsdp_shards({"parallelism": "ddp", "devices": 4}) == fsdp_shards({}) == 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_sharded_ranks_pretrain_as_one_process_and_resume_on_any_number_of_ranks(tmp_path):
    prepared = make_prepared(make_data_dir(tmp_path), tmp_path)
    alone = tmp_path / "alone"
    assert main(pretrain_args(prepared, alone, 5, 4)) == 0
    assert main(pretrain_args(prepared, alone, 8, 4) + ["--resume"]) == 0
    one = losses(alone)

    sharded = tmp_path / "sharded"
    result = torchrun(pretrain_args(prepared, sharded, 5, 2) + FSDP, cwd=tmp_path)
    assert "fully sharded (FSDP): each of 2 ranks keeps 1/2" in result.stdout + result.stderr
    two = losses(sharded)
    assert sorted(two) == [1, 2, 3, 4, 5]
    for step in two:
        assert abs(two[step] - one[step]) < LOSS_TOLERANCE, (step, two[step], one[step])
    assert "val_loss" in json.loads((sharded / "metrics.jsonl").read_text().splitlines()[-1])  # every rank evaluated

    # The files are a single process's: the model in full (every name, every shape), the optimizer's state in full,
    # numbered as one process numbers it.
    def shapes(tensors: dict) -> dict:
        return {name: tuple(tensor.shape) for name, tensor in tensors.items()}

    assert shapes(load_file(str(sharded / "model.safetensors"))) == shapes(load_file(str(alone / "model.safetensors")))
    full, ours = (torch.load(run / "checkpoint" / "state.pt", weights_only=True)["optimizer"]
                  for run in (alone, sharded))
    assert full["param_groups"] == ours["param_groups"]
    assert {index: shapes(moments) for index, moments in ours["state"].items()} == {
        index: shapes(moments) for index, moments in full["state"].items()}

    # Resumed to step 8 on one process without sharding, and (a copy) on 2 sharded ranks: both continue the run.
    shutil.copytree(sharded, tmp_path / "sharded-again")
    assert main(pretrain_args(prepared, sharded, 8, 4) + ["--resume"]) == 0
    torchrun(pretrain_args(prepared, tmp_path / "sharded-again", 8, 2) + ["--resume"] + FSDP, cwd=tmp_path)
    for resumed in (losses(sharded), losses(tmp_path / "sharded-again")):
        assert sorted(resumed) == list(range(1, 9))
        for step in range(6, 9):
            assert abs(resumed[step] - one[step]) < LOSS_TOLERANCE, (step, resumed[step], one[step])


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_sharded_ranks_fine_tune_all_weights_as_one_process(tmp_path):
    data_dir = make_data_dir(tmp_path)
    tokenizer = get_tokenizer(TOKENIZER, data_dir=data_dir)
    torch.manual_seed(0)
    base_dir = save_model(GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)), tmp_path / "base",
                          TOKENIZER)
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
    torchrun(sft_args(tmp_path / "sharded", 2) + FSDP, cwd=tmp_path)
    one, two = losses(tmp_path / "alone"), losses(tmp_path / "sharded")
    assert sorted(two) == [1, 2, 3, 4, 5]
    for step in two:
        assert abs(two[step] - one[step]) < LOSS_TOLERANCE, (step, two[step], one[step])
    single, written = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("alone", "sharded"))
    assert sorted(written) == sorted(single)
    for name in single:
        assert torch.allclose(written[name], single[name], atol=1e-4), name
