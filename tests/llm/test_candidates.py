"""Candidate answers (llm/candidates.py): n answers through the chat template from one prefill, each carrying
the seed and settings that regenerate it exactly, alone or with its batch; token counts without the stop."""

import json

import pytest
import torch

from llm.candidates import MAX_SEED, as_conversation, candidates, prompt_seed, regenerate
from llm.chat import end_of_turn_id
from llm.generate import SamplingSettings, chat_prompt
from llm.model import GPT, GPTConfig, padded_vocab_size
from llm.tokenizer import get_tokenizer
from tests.support.recorder import Recorder

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=padded_vocab_size(tokenizer.vocab_size), block_size=64,
                       n_layer=1, n_head=2, n_embd=32)
    return GPT(config).eval()


def test_every_candidate_is_regenerated_exactly_from_what_is_stored(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=6, temperature=0.9, top_k=100, top_p=0.95)
    batch = candidates(model, tokenizer, CONVERSATION, settings, seed=1234, num_samples=3)
    assert len({c.text for c in batch}) == 3  # really different answers
    for index, candidate in enumerate(batch):
        # What a database row keeps: the seed column and the sampling settings as JSON.
        stored = json.loads(json.dumps(candidate.sampling))
        assert stored["sample_index"] == index and stored["samples"] == 3 and stored["top_p"] == 0.95
        alone = regenerate(model, tokenizer, CONVERSATION, stored, candidate.seed)
        with_batch = regenerate(model, tokenizer, CONVERSATION, stored, candidate.seed, alone=False)
        assert alone == with_batch == candidate, index


def test_same_seed_same_answers_other_seed_other_answers(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=6)
    first = candidates(model, tokenizer, "Hello there", settings, seed=7, num_samples=2)
    assert candidates(model, tokenizer, "Hello there", settings, seed=7, num_samples=2) == first
    assert [c.text for c in candidates(model, tokenizer, "Hello there", settings, seed=8, num_samples=2)] != \
        [c.text for c in first]
    # A text prompt is one user turn of the chat template.
    as_chat = candidates(model, tokenizer, [{"role": "user", "content": "Hello there"}], settings, seed=7,
                         num_samples=2)
    assert as_chat == first


def test_token_count_is_what_was_generated_without_the_stop_token(model, tokenizer):
    ids, _ = chat_prompt(tokenizer, as_conversation("Count"))
    word = tokenizer.encode(" red")[0]
    end = end_of_turn_id(tokenizer)
    # Sample 0 says " red" twice and ends its turn; sample 1 runs to the length limit.
    forced = Recorder(model, prompt_length=len(ids), script=[[word, word], [word, word], [end, word]])
    batch = candidates(forced, tokenizer, "Count", SamplingSettings(max_new_tokens=5), seed=3, num_samples=2)
    assert batch[0].text == " red red" and batch[0].token_count == 2
    assert batch[1].token_count == 5


def test_prompt_seeds_fit_a_32_bit_column_and_differ_by_prompt_and_slot():
    seeds = {prompt_seed(seed, index, slot) for seed in (0, 1, MAX_SEED) for index in range(50) for slot in (0, 1)}
    assert len(seeds) == 3 * 50 * 2
    assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert prompt_seed(5, 3, 1) == prompt_seed(5, 3, 1)


def test_bad_seeds_and_incomplete_settings_are_refused(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=2)
    for seed in (-1, MAX_SEED + 1, 2**40, True):
        with pytest.raises(ValueError, match="seed"):
            candidates(model, tokenizer, "x", settings, seed=seed, num_samples=2)
    with pytest.raises(ValueError, match="num_samples"):
        candidates(model, tokenizer, "x", settings, seed=1, num_samples=0)
    with pytest.raises(ValueError, match="sample_index, samples"):
        regenerate(model, tokenizer, "x", {"temperature": 1.0, "top_k": None, "top_p": None, "max_new_tokens": 2}, 1)
    with pytest.raises(ValueError, match="outside a batch of 2"):
        regenerate(model, tokenizer, "x", {"temperature": 1.0, "top_k": None, "top_p": None, "max_new_tokens": 2,
                                           "sample_index": 2, "samples": 2}, 1)
