"""Sampling and generation: reproducibility, top-k/top-p, shared prefill, streaming UTF-8, stopping."""

import pytest
import torch

from llm.generate import (FINISHED, SamplingSettings, generate_text, generate_tokens, make_generators,
                          sample_next, sample_seed, stream_text)
from llm.model import GPT, GPTConfig, padded_vocab_size
from llm.tokenizer import get_tokenizer
from tests.support.recorder import Recorder


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=padded_vocab_size(tokenizer.vocab_size), block_size=64,
                       n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


def test_settings_are_validated():
    for bad in (dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(max_new_tokens=-1)):
        with pytest.raises(ValueError):
            SamplingSettings(**bad)


def test_sampling_frequencies_follow_the_distribution_after_top_k_and_top_p():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = probs.log().expand(20000, -1)
    generator = torch.Generator().manual_seed(0)

    def frequencies(settings):
        ids = sample_next(logits, settings, generator)
        return torch.bincount(ids, minlength=4).float() / ids.numel()

    torch.testing.assert_close(frequencies(SamplingSettings()), probs, rtol=0, atol=0.015)
    torch.testing.assert_close(frequencies(SamplingSettings(top_k=2)), torch.tensor([4 / 7, 3 / 7, 0, 0]),
                               rtol=0, atol=0.015)
    # Nucleus 0.5: 0.4 alone is not enough, 0.4 + 0.3 is; the rest are out.
    torch.testing.assert_close(frequencies(SamplingSettings(top_p=0.5)), torch.tensor([4 / 7, 3 / 7, 0, 0]),
                               rtol=0, atol=0.015)
    # Temperature 0.5 squares the probabilities (renormalised).
    sharpened = probs ** 2 / (probs ** 2).sum()
    torch.testing.assert_close(frequencies(SamplingSettings(temperature=0.5)), sharpened, rtol=0, atol=0.015)


def test_same_seed_same_text_and_different_seeds_differ(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=12, seed=7)
    first = generate_text(model, tokenizer, "Once upon a time", settings)
    assert generate_text(model, tokenizer, "Once upon a time", settings) == first
    other = generate_text(model, tokenizer, "Once upon a time", SamplingSettings(max_new_tokens=12, seed=8))
    assert other != first


def test_top_k_1_and_tiny_top_p_equal_greedy(model, tokenizer):
    prompt = tokenizer.encode("The capital of France is")
    greedy = [int(t[0]) for t in generate_tokens(model, prompt, SamplingSettings(max_new_tokens=10, temperature=0.0))]
    top_k = [int(t[0]) for t in generate_tokens(model, prompt, SamplingSettings(max_new_tokens=10, top_k=1, seed=1))]
    top_p = [int(t[0]) for t in generate_tokens(model, prompt, SamplingSettings(max_new_tokens=10, top_p=1e-6, seed=1))]
    sampled = [int(t[0]) for t in generate_tokens(model, prompt, SamplingSettings(max_new_tokens=10, seed=1))]
    assert top_k == greedy and top_p == greedy
    assert sampled != greedy  # at temperature 1 over ~50k near-uniform tokens, sampling is not greedy


def test_samples_share_one_prefill_and_each_equals_its_single_sample_run(model, tokenizer):
    prompt = tokenizer.encode("A shared prompt of a few tokens")
    recorder = Recorder(model)
    settings = SamplingSettings(max_new_tokens=8, seed=123, top_k=200)
    batch = torch.stack(list(generate_tokens(recorder, prompt, settings, num_samples=4)), dim=1)
    # One forward with the prompt at batch 1, then only single-token steps for all 4 samples together.
    assert recorder.calls == [(1, len(prompt))] + [(4, 1)] * 7
    for index in range(4):
        single = SamplingSettings(max_new_tokens=8, seed=sample_seed(123, index), top_k=200)
        alone = torch.cat(list(generate_tokens(model, prompt, single)))
        assert torch.equal(batch[index], alone), index
    assert len({tuple(row.tolist()) for row in batch}) == 4  # the samples really differ


def test_greedy_samples_are_identical_and_equal_the_single_run(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=10, temperature=0.0)
    four = generate_text(model, tokenizer, "Hello", settings, num_samples=4)
    single = generate_text(model, tokenizer, "Hello", settings)
    assert four == single * 4


def test_per_sample_generators_make_a_row_independent_of_its_batch():
    logits = torch.randn(3, 1000)
    settings = SamplingSettings(seed=5)
    together = sample_next(logits, settings, make_generators(settings, 3))
    for row in range(3):
        alone = sample_next(logits[row:row + 1], SamplingSettings(seed=sample_seed(5, row)),
                            make_generators(SamplingSettings(seed=sample_seed(5, row)), 1))
        assert int(alone[0]) == int(together[row])


def test_stream_text_concatenates_to_generate_text(model, tokenizer):
    # A random model emits many byte-fragment tokens: the stream must still reassemble the exact text.
    settings = SamplingSettings(max_new_tokens=40, seed=3, stop_at_end_of_text=False)
    deltas = list(stream_text(model, tokenizer, "Streaming test:", settings))
    assert len(deltas) > 1
    assert "".join(deltas) == generate_text(model, tokenizer, "Streaming test:", settings)[0]


def test_stream_never_splits_a_multi_byte_character(model, tokenizer):
    text = " 🙂 naïve café €5 日本語"
    script = tokenizer.encode(text)
    assert len(script) > len(text.split())  # GPT-2 splits these characters over several tokens
    prompt = tokenizer.encode("Say:")
    recorder = Recorder(model, prompt_length=len(prompt), script=script)
    settings = SamplingSettings(max_new_tokens=len(script), temperature=0.0)
    deltas = list(stream_text(recorder, tokenizer, prompt, settings))
    assert "".join(deltas) == text
    assert all("\ufffd" not in delta for delta in deltas)
    assert len(deltas) < len(script)  # partial characters were held back, not emitted as pieces


def test_stops_at_end_of_text_per_sample(model, tokenizer):
    eot = tokenizer.eot_id
    hello = tokenizer.encode(" hello")[0]
    prompt = tokenizer.encode("Stop here:")
    # Sample 0 ends after one token; sample 1 says hello twice then ends; both are greedy otherwise.
    script = [hello, [eot, hello], [eot, eot]]  # the first token comes from the shared prefill
    recorder = Recorder(model, prompt_length=len(prompt), script=script)
    settings = SamplingSettings(max_new_tokens=30, temperature=0.0)
    steps = [step.tolist() for step in generate_tokens(recorder, prompt, settings, num_samples=2, stop_ids=[eot])]
    assert steps == [[hello, hello], [eot, hello], [FINISHED, eot]]  # stops as soon as every sample ended
    texts = generate_text(Recorder(model, len(prompt), script), tokenizer, prompt, settings, num_samples=2)
    assert texts == [" hello", " hello hello"]

    # With stopping off, generation runs to max_new_tokens and the end-of-text shows up in the text.
    keep_going = SamplingSettings(max_new_tokens=6, temperature=0.0, stop_at_end_of_text=False)
    text = generate_text(Recorder(model, len(prompt), script), tokenizer, prompt, keep_going)[0]
    assert text.startswith(" hello<|endoftext|><|endoftext|>")
    assert len(text) > len(" hello<|endoftext|><|endoftext|>")  # and went on past them


def test_long_prompt_is_truncated_from_the_left_to_fit_the_context(model, tokenizer):
    block = model.config.block_size
    prompt = list(range(100, 100 + block + 20))  # longer than the whole context
    recorder = Recorder(model)
    steps = list(generate_tokens(recorder, prompt, SamplingSettings(max_new_tokens=10, temperature=0.0)))
    assert len(steps) == 10
    assert recorder.calls[0] == (1, block - 10)  # the last block - 10 prompt tokens were kept
    # The kept tokens are the most recent ones: same output as giving only those.
    truncated = list(generate_tokens(model, prompt[-(block - 10):], SamplingSettings(max_new_tokens=10, temperature=0.0)))
    assert torch.equal(torch.cat(steps), torch.cat(truncated))
    # Asking for more new tokens than the context holds still leaves one prompt token.
    many = list(generate_tokens(model, prompt, SamplingSettings(max_new_tokens=10 * block, temperature=0.0)))
    assert len(many) == block - 1


def test_only_tokenizer_ids_are_sampled(model, tokenizer):
    # The embedding has 50304 rows but the tokenizer only 50259 ids: padding rows must never be drawn.
    boosted = Recorder(model, prompt_length=1, script=[model.config.vocab_size - 1] * 5)
    settings = SamplingSettings(max_new_tokens=5, seed=0)
    ids = torch.cat(list(generate_tokens(boosted, [1], settings, vocab_size=tokenizer.vocab_size)))
    assert (ids < tokenizer.vocab_size).all()
    assert generate_text(boosted, tokenizer, [1], settings)  # decodes without a KeyError


def test_ids_the_tokenizer_cannot_decode_are_never_sampled():
    # cl100k has unused ids inside its range (100256, 100261-100275); tiktoken raises on them.
    cl100k = get_tokenizer("cl100k")
    torch.manual_seed(0)
    small = GPT(GPTConfig(vocab_size=padded_vocab_size(cl100k.vocab_size), block_size=16, n_layer=1, n_head=1, n_embd=8))
    hole = 100256
    with pytest.raises(KeyError):
        cl100k.decode([hole])
    boosted = Recorder(small.eval(), prompt_length=1, script=[hole] * 4)
    settings = SamplingSettings(max_new_tokens=4, seed=0)
    assert hole in torch.cat(list(generate_tokens(boosted, [1], settings, vocab_size=cl100k.vocab_size))).tolist()
    texts = generate_text(boosted, cl100k, [1], settings) + ["".join(stream_text(boosted, cl100k, [1], settings))]
    assert all(text for text in texts)  # decoded without a KeyError: the hole was never drawn


def test_generation_leaves_no_inference_mode_and_restores_training_mode(model):
    model.train()
    try:
        steps = generate_tokens(model, [1, 2, 3], SamplingSettings(max_new_tokens=3, seed=0))
        next(steps)
        assert not torch.is_inference_mode_enabled()  # the caller's code between steps runs normally
        list(steps)
        assert model.training
    finally:
        model.eval()
