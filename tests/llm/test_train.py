"""The training loop: it learns, it resumes exactly, it stops on request, its schedule and MFU are right."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llm.checkpoint import load_model, read_config
from llm.dataloader import BatchSampler, TokenData
from llm.device import (autocast_context, known_peak_flops, measure_matmul_peak_flops, mfu, pick_device,
                        resolve_dtype)
from llm.evaluate import evaluate
from llm.model import GPT, config_from_preset
from llm.pretrain import NextTokenObjective, pretrain
from llm.tokenizer import train_tokenizer
from llm.train import (TrainConfig, format_progress, lr_at, make_optimizer, MetricsLog, train)
from tests.support.token_streams import VOCAB



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_run(prepared, *, model_seed=0, sampler_seed=1, dropout=0.0, **overrides):
    settings = dict(max_steps=8, batch_size=4, block_size=16, lr=1e-2, warmup=2, eval_every=4, eval_batches=2,
                    log_every=1, checkpoint_every=0, peak_flops=1e10, device="cpu")
    config = TrainConfig(**{**settings, **overrides})
    torch.manual_seed(model_seed)
    model = GPT(config_from_preset("tiny", VOCAB, block_size=config.block_size, dropout=dropout))
    batches = BatchSampler(TokenData(prepared, "train"), config.batch_size, config.block_size, seed=sampler_seed)
    objective = NextTokenObjective(TokenData(prepared, "val"), np.ones(VOCAB, dtype=np.int64),
                                   config.batch_size, config.block_size, config.eval_batches)
    return model, objective, batches, config


def quiet(_line):
    pass


@pytest.mark.slow
def test_tiny_model_overfits_a_periodic_sequence(periodic_data, tmp_path):
    model, objective, batches, config = make_run(periodic_data, max_steps=60, warmup=10, eval_every=30,
                                                 log_every=10)
    records = []
    result = train(model, objective, batches, config, tmp_path / "run", on_metrics=records.append, log=quiet)
    # At the start the model knows nothing: about ln(512) = 6.24 nats per token.
    assert abs(records[0]["loss"] - math.log(VOCAB)) < 0.5
    # Each id of the cycle determines the next one, so a model that has learnt the cycle pays almost
    # nothing; 0.5 nats (a 60% guess) is far below chance yet well above what 60 steps reach (~0.02).
    assert result["loss"] < 0.5 and result["val_loss"] < 0.5
    assert result["step"] == 60 and not result["stopped"]


@pytest.mark.parametrize("interruption", ["should_stop", "crash"])
def test_resumed_run_matches_the_uninterrupted_run(periodic_data, tmp_path, interruption):
    # Dropout makes the losses depend on the torch RNG too, so its restoration is tested as well.
    def run(**overrides):
        return make_run(periodic_data, dropout=0.1, grad_accum=2, **overrides)

    n_steps = 8
    train(*run(), tmp_path / "reference", log=quiet)
    expected = MetricsLog(tmp_path / "reference" / "metrics.jsonl").read()

    out = tmp_path / "interrupted"
    if interruption == "should_stop":  # cooperative: stop after 3 steps, the loop saves a checkpoint
        calls = iter(range(100))
        result = train(*run(), out, should_stop=lambda: next(calls) == 2, log=quiet)
        assert result["stopped"] and result["step"] == 3
    else:  # a killed worker: checkpoint at step 3, then the process dies at step 5 after logging it
        def die_at_step_5(record):
            if record["step"] == 5:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            train(*run(checkpoint_every=3), out, on_metrics=die_at_step_5, log=quiet)
        assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").read()] == [1, 2, 3, 4, 5]

    # Resume with fresh objects seeded differently: everything that matters must come from the checkpoint.
    result = train(*run(model_seed=123, sampler_seed=456), out, log=quiet)
    assert result["step"] == n_steps and not result["stopped"]

    resumed = MetricsLog(out / "metrics.jsonl").read()
    assert [r["step"] for r in resumed] == list(range(1, n_steps + 1))  # no step twice
    for got, want in zip(resumed, expected):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6), got["step"]
        assert got["lr"] == want["lr"]
        if "val_loss" in want:
            assert got["val_loss"] == pytest.approx(want["val_loss"], abs=1e-6)
    final = load_file(str(out / "checkpoint" / "weights.safetensors"))
    reference_final = load_file(str(tmp_path / "reference" / "checkpoint" / "weights.safetensors"))
    assert all(torch.allclose(final[name], reference_final[name], atol=1e-6) for name in reference_final)


def test_should_stop_saves_a_checkpoint_and_returns(periodic_data, tmp_path):
    calls = []
    result = train(*make_run(periodic_data, max_steps=50), tmp_path / "run",
                   should_stop=lambda: calls.append(1) or len(calls) >= 3, log=quiet)
    assert result["stopped"] and result["step"] == 3 and len(calls) == 3
    checkpoint = tmp_path / "run" / "checkpoint"
    assert json.loads((checkpoint / "checkpoint.json").read_text())["step"] == 3
    state = torch.load(checkpoint / "state.pt", weights_only=True)  # plain tensors and values only
    assert state["step"] == 3 and state["batches"]["batches_served"] == 3
    assert "wte.weight" in load_file(str(checkpoint / "weights.safetensors"))
    assert not (tmp_path / "run" / "model.safetensors").exists()  # the final export is for finished runs
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_metrics_records_and_progress_lines(periodic_data, tmp_path):
    records, lines = [], []
    result = train(*make_run(periodic_data, max_steps=6, log_every=2, eval_every=3), tmp_path / "run",
                   on_metrics=records.append, log=lines.append)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 6]  # step 1, every 2nd, eval steps, the last
    assert records == MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    for record in records:
        assert {"step", "loss", "lr", "tokens_per_s", "mfu", "progress", "tokens"} <= record.keys()
        assert record["tokens_per_s"] > 0 and 0 < record["mfu"]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert "val_bpb" in records[-1] and records[-1]["progress"] == 1.0
    assert records[-1]["tokens"] == 6 * 4 * 16
    assert result["val_loss"] == records[-1]["val_loss"]
    assert any(line.startswith("step 6/6 | loss ") and "val_bpb" in line and "tok/s" in line for line in lines)


def test_resuming_a_finished_run_trains_nothing(periodic_data, tmp_path):
    train(*make_run(periodic_data, max_steps=3), tmp_path / "run", log=quiet)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    result = train(*make_run(periodic_data, max_steps=3), tmp_path / "run", log=quiet)
    assert result["step"] == 3 and result["loss"] is not None and "val_loss" in result
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_a_checkpoint_of_another_model_is_refused(periodic_data, tmp_path):
    train(*make_run(periodic_data, max_steps=2), tmp_path / "run", log=quiet)
    model, objective, batches, config = make_run(periodic_data, max_steps=4)
    wider = GPT(config_from_preset("tiny", VOCAB, block_size=16, n_embd=32))
    with pytest.raises(ValueError, match="different model"):
        train(wider, objective, batches, config, tmp_path / "run", log=quiet)
    # resume=False starts over instead, and the old run's records go with its checkpoint
    records = []
    result = train(wider, objective, batches, config, tmp_path / "run", resume=False, on_metrics=records.append,
                   log=quiet)
    assert result["step"] == 4 and [r["step"] for r in records] == [1, 2, 3, 4]
    assert MetricsLog(tmp_path / "run" / "metrics.jsonl").read() == records


class DictBatches:
    """A batch source of dict batches, as an SFT or DPO data source might produce."""

    def __init__(self, sampler):
        self.sampler = sampler

    def next_batch(self):
        inputs, targets = self.sampler.next_batch()
        return {"inputs": inputs, "targets": targets}

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)


class AccuracyObjective:
    """Next-token loss on dict batches that also reports a metric of its own (no evaluate method)."""

    def loss(self, model, batch):
        logits, loss = model(batch["inputs"], batch["targets"])
        return loss, {"accuracy": (logits.argmax(-1) == batch["targets"]).float().mean()}

    def tokens_in(self, batch):
        return batch["inputs"].numel()


def test_other_objectives_plug_in_and_only_trainable_params_are_updated_and_saved(periodic_data, tmp_path):
    model, _, sampler, config = make_run(periodic_data, max_steps=4)
    # Like LoRA: most of the model frozen, the optimizer and checkpoint see only what trains.
    trainable = [p for name, p in model.named_parameters() if name.startswith(("blocks.1.", "ln_f."))]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    frozen_before = model.wte.weight.clone()
    trainable_before = [p.clone() for p in trainable]
    records = []
    result = train(model, AccuracyObjective(), DictBatches(sampler), config, tmp_path / "run",
                   trainable_params=trainable, on_metrics=records.append, log=quiet)
    assert result["step"] == 4 and "val_loss" not in result
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in records)
    assert torch.equal(model.wte.weight, frozen_before)
    assert all(not torch.equal(p, before) for p, before in zip(trainable, trainable_before))
    saved = load_file(str(tmp_path / "run" / "checkpoint" / "weights.safetensors"))
    assert saved.keys() == {name for name, p in model.named_parameters() if p.requires_grad}


def test_lr_schedule_warmup_and_cosine_endpoints():
    config = TrainConfig(max_steps=110, lr=1.0, min_lr=0.1, warmup=10)
    assert lr_at(1, config) == pytest.approx(0.1)
    assert lr_at(5, config) == pytest.approx(0.5)
    assert lr_at(10, config) == pytest.approx(1.0)  # warmup ends at the peak
    assert lr_at(60, config) == pytest.approx(0.55)  # half way through the cosine: the mean of lr and min_lr
    assert lr_at(110, config) == pytest.approx(0.1)  # ends at min_lr
    decay = [lr_at(step, config) for step in range(10, 111)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert TrainConfig(lr=3e-4).final_lr == pytest.approx(3e-5)  # min_lr defaults to lr / 10
    no_warmup = TrainConfig(max_steps=100, lr=1.0, warmup=0)
    assert 0.99 < lr_at(1, no_warmup) < 1.0


def test_weight_decay_only_on_matrices():
    model = GPT(config_from_preset("tiny", VOCAB, block_size=16))
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype(torch.device("cuda"), "float16")


def refused_values(setting):
    """Values a declared setting refuses: just past each bound, and a word it does not take."""
    if setting.type in ("int", "float"):
        if setting.minimum is not None:
            yield setting.minimum if setting.exclusive_minimum else setting.minimum - 1
        if setting.maximum is not None:
            yield setting.maximum + 1
    yield {"device": "mps", "compile": "sometimes", "bool": "yes"}.get(setting.type, "nonsense")


def test_train_config_refuses_what_its_declarations_refuse_in_the_same_words():
    """One rule (llm/params.py): TrainConfig applies its declared bounds, not looser copies of them (it took
    block_size=4 and lr=5 before), and says what a job's params and the CLI say."""
    from llm.params import settings_of
    from worker.jobs.params import JobParamsError, check_params

    declared = settings_of(TrainConfig)
    checked = 0
    for name, setting in declared.items():
        for value in refused_values(setting):
            with pytest.raises(ValueError) as by_the_declaration:
                setting.check(name, value)
            with pytest.raises(ValueError) as by_the_config:
                TrainConfig(**{name: value})
            with pytest.raises(JobParamsError) as by_a_job:
                check_params("pretrain", declared, {name: value})
            assert str(by_the_config.value) == str(by_a_job.value) == f"{name}: {by_the_declaration.value}"
            checked += 1
    assert checked > 2 * len(declared)
    assert str(pytest.raises(ValueError, TrainConfig, block_size=4).value) == "block_size: must be at least 8, got 4"
    # What a declaration converts, the config converts too.
    config = TrainConfig(max_steps=30.0, device=" CUDA:1 ", min_lr=None)
    assert config.max_steps == 30 and isinstance(config.max_steps, int) and config.device == "cuda:1"


def test_mfu_math_and_peak_lookup():
    # 6 MFLOP per token at 1,000 tokens/s is 6 GFLOP/s: 60% of a 10 GFLOP/s chip.
    assert mfu(6e6, 1000, 1e10) == pytest.approx(0.6)
    assert known_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert known_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert known_peak_flops("NVIDIA H200") == 989e12
    assert known_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert known_peak_flops("Some Future GPU") is None
    # Measuring leaves the global RNG alone: the first run in a process measures right after seeding, and
    # moving the RNG there made its dropout differ from every later run's (a resumed run's included).
    torch.manual_seed(5)
    before = torch.get_rng_state()
    measured = measure_matmul_peak_flops("cpu", size=128, repeats=3)
    assert 1e6 < measured < 1e14
    assert torch.equal(torch.get_rng_state(), before)
    line = format_progress({"step": 120, "loss": 3.21, "val_bpb": 1.52, "tokens_per_s": 8400.0, "mfu": 0.41}, 500)
    assert line == "step 120/500 | loss 3.2100 | val_bpb 1.5200 | 8,400 tok/s | MFU 41.0%"


@pytest.mark.subprocess
@pytest.mark.slow
def test_importing_the_training_modules_creates_no_cuda_context():
    # A fresh interpreter: another test in this process may have used CUDA on a GPU machine.
    code = ("import torch, llm.device, llm.train, llm.pretrain, llm.evaluate; "
            "assert not torch.cuda.is_initialized(), 'CUDA initialised at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")
    assert resolve_dtype(torch.device("cpu"), "auto") == torch.float32
    assert type(autocast_context("cpu")).__name__ == "nullcontext"


def test_auto_precision_is_bf16_only_on_gpus_that_have_it_natively(monkeypatch):
    # Pre-Ampere GPUs report bf16 "supported" by emulation, slower than float32: auto keeps float32 there.
    native = {"value": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or native["value"])
    assert resolve_dtype(torch.device("cuda"), "auto") == torch.float32
    assert resolve_dtype(torch.device("cuda"), "bfloat16") == torch.bfloat16  # asked for: given
    native["value"] = True
    assert resolve_dtype(torch.device("cuda"), "auto") == torch.bfloat16


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """A prepared directory from real text with a small trained tokenizer under a data dir."""
    root = tmp_path_factory.mktemp("text")
    docs = [f"the {a} {b} the {c}." for a in ("cat", "dog", "bird") for b in ("sat on", "ate", "saw")
            for c in ("mat", "bone", "tree")] * 3
    tokenizer = train_tokenizer(iter(docs), 300, root / "data" / "tokenizers" / "tiny-bpe", name="tiny-bpe")
    prepared = root / "prepared"
    prepared.mkdir()
    stats = {"tokenizer": "tiny-bpe", "dtype": "uint16", "vocab_size": tokenizer.vocab_size}
    for split, split_docs in (("train", docs), ("val", docs[:20])):
        ids = [i for doc in split_docs for i in [tokenizer.eot_id, *tokenizer.encode(doc)]]
        np.asarray(ids, dtype=np.uint16).tofile(prepared / f"{split}.bin")
        stats[split] = {"documents": len(split_docs), "tokens": len(ids),
                        "bytes": sum(len(d.encode()) for d in split_docs)}
    (prepared / "stats.json").write_text(json.dumps(stats))
    return prepared, root / "data"


def test_pretrain_writes_a_model_directory_that_evaluate_reads(text_data, tmp_path):
    prepared, data_dir = text_data
    config = TrainConfig(max_steps=5, batch_size=4, block_size=16, warmup=1, eval_every=5, eval_batches=50,
                         log_every=5, peak_flops=1e10, device="cpu")
    result = pretrain(prepared, tmp_path / "run", train_config=config, data_dir=data_dir, log=quiet)
    assert set(result) >= {"stopped", "step", "loss", "val_loss", "val_bpb", "model_dir"}
    assert result["step"] == 5 and result["model_dir"] == str(tmp_path / "run")
    config_json = read_config(tmp_path / "run")
    assert config_json["tokenizer"] == "tiny-bpe" and config_json["model"]["block_size"] == 16
    model, tokenizer = load_model(tmp_path / "run", data_dir=data_dir)
    assert tokenizer.name == "tiny-bpe"
    # The same windows evaluated from the saved directory give the loop's final evaluation.
    again = evaluate(tmp_path / "run", prepared, batch_size=4, block_size=16, device="cpu", data_dir=data_dir)
    assert again["val_loss"] == pytest.approx(result["val_loss"], rel=1e-5)
    assert again["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-5)


def test_pretrain_rejects_a_block_longer_than_the_data(text_data, tmp_path):
    prepared, data_dir = text_data
    val_tokens = len(TokenData(prepared, "val"))
    config = TrainConfig(max_steps=1, block_size=val_tokens + 10, device="cpu")
    with pytest.raises(ValueError, match=rf"val\.bin holds only {val_tokens} tokens.*--block-size"):
        pretrain(prepared, tmp_path / "run", train_config=config, data_dir=data_dir, log=quiet)
    assert not (tmp_path / "run").exists()
