"""DPO (llm/dpo.py): resumable like every run, the reference costs no second model, and DPO moves an SFT
model's sampled answers towards the preferred kind.

The preference rule is tests/llm/test_reward.py's: answers with a polite word are preferred over the same answer
with a pushy word. An SFT model trained on both kinds half and half samples each about half the time; after
DPO on pairs that prefer the polite one, it should sample polite answers clearly more often."""

from __future__ import annotations

import json

import pytest
import torch

from llm.chat import end_of_turn_id
from llm.checkpoint import load_model, read_architecture
from llm.dpo import dpo
from llm.tuned_policy import REFERENCE_FILE
from llm.dpo_config import DPOConfig, dpo_train_config
from llm.generate import SamplingSettings, chat_prompt, generate_tokens
from tests.support.polite import HELD_OUT, is_polite, polite_pairs, quiet, train_mixed_sft

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_run(**overrides):
    settings = dict(max_steps=6, batch_size=4, block_size=64, eval_every=3, eval_batches=2, log_every=1,
                    checkpoint_every=0, warmup=1, device="cpu")
    return dpo_train_config(DPOConfig(method="lora"), **{**settings, **overrides})


@pytest.mark.parametrize("method", ["lora", "full"])
def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(base_dir, tmp_path, method):
    from safetensors.torch import load_file

    full = method == "full"
    config = small_run(grad_accum=2, lr=1e-3 if full else 1e-2)
    dpo_config = DPOConfig(method=method, lora_dropout=0.1, lora_r=4)
    pairs = polite_pairs(24, 2)
    whole = dpo(base_dir, pairs, tmp_path / "whole", dpo_config=dpo_config, train_config=config, log=quiet)
    asked = []
    stopped = dpo(base_dir, pairs, tmp_path / "parts", dpo_config=dpo_config, train_config=config,
                  should_stop=lambda: asked.append(1) or len(asked) >= 2, log=quiet)
    assert stopped["stopped"] and stopped["step"] == 2
    assert (tmp_path / "parts" / REFERENCE_FILE).is_file() == full  # full DPO keeps its reference with the run
    resumed = dpo(base_dir, pairs, tmp_path / "parts", dpo_config=dpo_config, train_config=config, log=quiet)
    assert resumed["loss"] == whole["loss"] and resumed["val_loss"] == whole["val_loss"]
    name = "model.safetensors" if full else "adapter_model.safetensors"
    expected, actual = load_file(tmp_path / "whole" / name), load_file(tmp_path / "parts" / name)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert read_architecture(tmp_path / "whole") == ("gpt" if full else "lora_adapter")
    assert whole["kl"] is not None and whole["val_rewards/accuracies"] is not None


def test_the_first_step_starts_at_log_2(base_dir, tmp_path):
    # Policy = reference before any update: every log ratio is 0, so the sigmoid loss is -log sigmoid(0); RPO (the
    # default) adds its weight times the chosen answers' NLL per token, which is minus their log-prob per token.
    for rpo_alpha in (0.0, DPOConfig().rpo_alpha):
        records = []
        dpo(base_dir, polite_pairs(8, 4), tmp_path / f"run-{rpo_alpha}", log=quiet, on_metrics=records.append,
            dpo_config=DPOConfig(method="full", val_fraction=0, rpo_alpha=rpo_alpha),
            train_config=small_run(max_steps=1, lr=1e-9))
        nll = records[0].get("nll_loss", 0.0)
        assert records[0]["loss"] == pytest.approx(0.693147 + rpo_alpha * nll, abs=1e-4)
        assert records[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
        assert nll == pytest.approx(-records[0]["logps/chosen_per_token"] if rpo_alpha else 0.0, abs=1e-4)
    assert rpo_alpha == 1.0 and nll > 5  # a random model: the chosen answers are far from likely


def polite_share(model_dir, prompts, seed):
    """Share of sampled answers (one per prompt, fixed seeds) with a polite word and no pushy one."""
    model, tokenizer = load_model(model_dir)
    polite = 0
    for index, prompt in enumerate(prompts):
        ids, stops = chat_prompt(tokenizer, prompt)
        reply = [int(step[0]) for step in generate_tokens(model, ids, SamplingSettings(
            max_new_tokens=16, temperature=1.0, seed=seed + index), 1, stops, tokenizer.vocab_size)]
        polite += is_polite(tokenizer, tokenizer.decode([t for t in reply if t >= 0 and t != end_of_turn_id(tokenizer)]))
    return polite / len(prompts)


@pytest.mark.slow
def test_dpo_makes_the_preferred_answers_more_likely(base_dir, tmp_path):
    sft_dir = train_mixed_sft(base_dir, tmp_path / "sft")
    before = polite_share(sft_dir, HELD_OUT, seed=1000)
    # Full DPO, beta 0.5: a tiny model drifts into broken words at beta 0.1 (measured: KL 9 to 19 nats after
    # 300 steps at lr 1e-4 to 3e-4, with many answers that are neither polite nor pushy any more). Plain DPO, as
    # measured here: no RPO term, the watch only warns (tests/llm/test_dpo_degeneration.py tests those).
    result = dpo(sft_dir, polite_pairs(300, 7), tmp_path / "dpo",
                 dpo_config=DPOConfig(method="full", beta=0.5, rpo_alpha=0.0, stop_on_degeneration=False),
                 train_config=small_run(max_steps=300, batch_size=8, lr=2e-4, eval_every=150, eval_batches=5),
                 log=quiet)
    after = polite_share(result["model_dir"], HELD_OUT, seed=1000)
    report = json.loads((tmp_path / "dpo" / "dpo_report.json").read_text())
    print(f"polite share before {before:.2f}, after {after:.2f}; held-out preference accuracy "
          f"{report['val_rewards/accuracies']}, KL {report['kl']}")
    # The bound: at least 20 points more of the held-out prompts (60, fixed seeds) answered politely
    # (measured: 55 % -> 87 %).
    assert after - before >= 0.20, (before, after)
    assert report["val_rewards/accuracies"] >= 0.9
