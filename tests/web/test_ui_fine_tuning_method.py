"""What the Train forms of SFT, reward and DPO say before a submit: the method "auto" resolved on the chosen model
(all weights on a small one, a LoRA adapter on a large one), why, and the learning rate the run gets from the
model's width; the same resolution submit stores (worker.jobs.params.resolve_fine_tuning). No browser."""

from __future__ import annotations

import html

from db.models import ModelKind
from llm.dpo_config import DPO_DEFAULTS
from llm.reward_config import REWARD_DEFAULTS
from llm.sft_config import SFT_DEFAULTS
from tests.support.records import add_chat_dataset_row, add_model_row
from web import services
from web.ui.train_tab import estimate_html
from worker.kinds.dpo.form import PANEL as DPO_PANEL
from worker.kinds.reward.form import PANEL as REWARD_PANEL


def shown(markup: str) -> str:
    return html.unescape(markup).replace("<br>", "\n")


def test_the_fine_tune_estimate_says_what_auto_picks_and_the_learning_rate(workbench_env, session):
    tiny = add_model_row(session, 2, 64, vocab_size=50_257, kind=ModelKind.sft)
    medium = add_model_row(session, 24, 1024, vocab_size=50_257, kind=ModelKind.sft)
    chat = add_chat_dataset_row(session)
    small_run = services.estimate_run("sft", {"model_id": tiny.id, "dataset_id": chat.id, "device": "cpu"})
    assert small_run["method"] == "full" and small_run["trainable_params"] == small_run["params_total"]
    rate = SFT_DEFAULTS.full_lr.at(64)
    assert small_run["lr"] == rate and small_run["lr_given"] is False
    text = shown(estimate_html(small_run))
    assert "Method: all weights: 3.3 M parameters; below 200 M an adapter saves little memory" in text
    assert f"Learning rate {rate:g} (chosen from the model's width; see docs/defaults.md)." in text

    large_run = services.estimate_run("sft", {"model_id": medium.id, "dataset_id": chat.id, "device": "cpu"})
    assert large_run["method"] == "lora" and large_run["trainable_params"] < large_run["params_total"] / 10
    assert large_run["lr"] == SFT_DEFAULTS.lora_lr.at(1024)
    assert "Method: LoRA adapter: 354 M parameters; above 200 M" in shown(estimate_html(large_run))

    chosen = services.estimate_run("sft", {"model_id": tiny.id, "method": "lora", "lr": 3e-3, "device": "cpu"})
    assert chosen["method"] == "lora" and chosen["lr"] == 3e-3
    assert "Method: LoRA adapter, as chosen.\nLearning rate 0.003 (as given)." in shown(estimate_html(chosen))


def test_the_reward_and_dpo_panels_say_the_method_beside_the_pairs(workbench_env, session):
    tiny = add_model_row(session, 2, 64, vocab_size=50_257, kind=ModelKind.sft)
    assert "Method" not in REWARD_PANEL.render(workbench_env, {})  # no model chosen yet: nothing to say
    reward = shown(REWARD_PANEL.render(workbench_env, {"model_id": tiny.id}))
    assert "Choose where the pairs come from" in reward  # the pair counts are still there
    assert "Method: all weights: 3.3 M parameters" in reward
    assert f"Learning rate {REWARD_DEFAULTS.full_lr.at(64):g} (chosen from the model's width" in reward
    dpo = shown(DPO_PANEL.render(workbench_env, {"model_id": tiny.id, "method": "lora"}))
    assert f"Method: LoRA adapter, as chosen.\nLearning rate {DPO_DEFAULTS.lora_lr.at(64):g} (" in dpo
    assert {"model_id", "method", "lr"} <= set(DPO_PANEL.inputs) <= set(REWARD_PANEL.inputs)
