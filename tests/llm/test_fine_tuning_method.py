"""The fine-tuning method and learning rate of SFT, reward and DPO (llm/train_config.py): what `auto` stands for
on a model, and the learning rate as a rule on the model's width. No torch: these are the rules the job layer
and the CLI apply before a run starts."""

from __future__ import annotations

import pytest

from llm.dpo_config import DPO_DEFAULTS, DPOConfig
from llm.model import PRESETS
from llm.params import settings_of
from llm.reward_config import REWARD_DEFAULTS, RewardConfig
from llm.sft_config import SFT_DEFAULTS, SFTConfig, resolve_method
from llm.train_config import (ALL_WEIGHTS_UP_TO, REFERENCE_WIDTH, TrainConfig, WidthRule, choose_method,
                              model_parameters)

GPT2_VOCAB = 50_257


def shape(preset: str, vocab_size: int = GPT2_VOCAB) -> dict:
    """A Model row's `config` (GPTConfig as a dict) of a preset."""
    return {**PRESETS[preset], "vocab_size": vocab_size}


GPT2_MEDIUM = {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024, "vocab_size": GPT2_VOCAB}


def test_auto_trains_all_weights_of_a_small_model_and_says_why():
    choice = choose_method("auto", shape("tiny"))
    assert choice.method == "full" and choice.full
    assert choice.reason.startswith("all weights: 3.3 M parameters") and "below 200 M" in choice.reason
    # The largest preset (GPT-2 small, 124 M) is still small enough.
    assert choose_method("auto", shape("gpt2-124m")).method == "full"


def test_auto_trains_an_adapter_on_a_large_model_or_one_of_unknown_size():
    assert model_parameters(GPT2_MEDIUM) > ALL_WEIGHTS_UP_TO
    choice = choose_method("auto", GPT2_MEDIUM)
    assert choice.method == "lora" and not choice.full
    assert "355 M parameters" in choice.reason and "GB" in choice.reason
    unknown = choose_method("auto", {"architecture": "gpt"})  # a model row made by hand: no shape
    assert unknown.method == "lora" and "not recorded" in unknown.reason


def test_an_explicit_method_is_kept_whatever_the_size():
    assert choose_method("lora", shape("tiny")).method == "lora"
    assert choose_method("full", GPT2_MEDIUM).method == "full"
    with pytest.raises(ValueError, match="method must be one of auto, lora, full"):
        choose_method("adapter", shape("tiny"))


def test_resolving_replaces_auto_in_every_fine_tuning_config():
    for config in (SFTConfig(lora_r=4), RewardConfig(center_rewards_coefficient=0.01), DPOConfig(beta=0.2)):
        assert config.method == "auto"
        with pytest.raises(ValueError, match="not resolved yet"):
            config.full
        resolved, choice = resolve_method(config, shape("small"))
        assert resolved.method == "full" and resolved.full and choice.reason.startswith("all weights")
        assert type(resolved) is type(config) and resolved == type(config)(**{**vars(config), "method": "full"})


def test_the_learning_rate_follows_the_width_by_the_rule():
    rule = WidthRule(at_reference=1e-4, power=1.0)
    assert rule.at(REFERENCE_WIDTH) == 1e-4 and rule.at(None) == 1e-4
    assert rule.at(64) == pytest.approx(1e-4 * REFERENCE_WIDTH / 64, rel=1e-3)  # 12 times narrower: 12 times the rate
    assert rule.at(384) == pytest.approx(2e-4)
    assert WidthRule(at_reference=1e-4, power=0.5).at(192) == pytest.approx(2e-4)
    # Each kind's defaults apply their rules: two widths, two rates; a rate given is kept.
    for defaults in (SFT_DEFAULTS, REWARD_DEFAULTS, DPO_DEFAULTS):
        for method, rule in (("lora", defaults.lora_lr), ("full", defaults.full_lr)):
            narrow, wide = defaults.learning_rate(method, None, 64), defaults.learning_rate(method, None, 768)
            assert (narrow, wide) == (rule.at(64), rule.at(768))
            if rule.power > 0:  # a wider model, a smaller rate
                assert narrow > wide
            assert defaults.learning_rate(method, 3e-3, 64) == 3e-3
            assert defaults.train_config(method, 64, max_steps=7).lr == narrow
        with pytest.raises(ValueError, match="resolve 'auto'"):
            defaults.learning_rate("auto", None, 64)


def test_the_learning_rate_flag_says_where_its_default_comes_from_and_pretraining_keeps_its_own():
    for defaults in (SFT_DEFAULTS, REWARD_DEFAULTS, DPO_DEFAULTS):
        lr = defaults.settings()["lr"]
        assert lr.default is None and "empty: chosen from the model's width (see docs/defaults.md)" in lr.help
    assert settings_of(TrainConfig)["lr"].default == 1e-3 == TrainConfig().lr  # pretraining's, untouched
    from worker.kinds import KINDS

    assert KINDS["pretrain"].params["lr"].default == 1e-3
    method = KINDS["sft"].params["method"]
    assert method.default == "auto" and method.choices == ("auto", "lora", "full")
    assert "full" not in KINDS["sft"].params and "full" not in KINDS["reward"].params
