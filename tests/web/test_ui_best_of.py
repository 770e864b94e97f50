"""Best-of-N in the Chat tab, without a browser: N answers scored by a reward model, the best shown and all N
listed with their rewards; clear messages when the choice cannot work."""

from __future__ import annotations

import html

import pytest

from db.models import Model, ModelKind
from llm.generate import SamplingSettings
from llm.reward import reward
from tests.support.polite import polite_pairs, small_run
from tests.support.records import add_chat_model
from web.services.model_cache import ModelCache
from web.ui.chat_tab import best_of_answers


def add_reward_model(session, settings, chat_model):
    out = settings.data_dir / "models" / "rm"
    reward(settings.data_dir / chat_model.path, polite_pairs(8, 0), out, train_config=small_run(max_steps=2),
           log=lambda _: None)
    row = Model(name="rm", kind=ModelKind.reward, tokenizer="gpt2", config=chat_model.config, path="models/rm",
                parent_model_id=chat_model.id)
    session.add(row)
    session.commit()
    return row


def test_best_of_n_in_chat(api_settings, users, session):
    chat = add_chat_model(session, api_settings, "chat-a", 1)
    scorer = add_reward_model(session, api_settings, chat)
    cache = ModelCache(data_dir=api_settings.data_dir)
    history = [{"role": "user", "content": "What should I do with the box?"}]
    best, listing = best_of_answers(api_settings, cache, history, chat.id, scorer.id, 4,
                                    SamplingSettings(max_new_tokens=6, seed=1), None, None)
    rewards = [float(part.split('"')[0]) for part in listing.split('data-reward="')[1:]]
    assert len(rewards) == 4 and rewards == sorted(rewards, reverse=True)
    assert html.escape(best) in listing.split("</li>")[0]  # the best answer is the first listed
    with pytest.raises(ValueError, match="reward model"):
        best_of_answers(api_settings, cache, history, chat.id, None, 4, SamplingSettings(), None, None)
