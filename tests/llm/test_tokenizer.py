"""Tokenizers: known ids, Unicode round trips, chat specials that user text can never forge, trained BPE."""

import random

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.tokenizer import (CHAT_SPECIALS, END_OF_TEXT, IM_END, IM_START, get_tokenizer, list_tokenizers,
                           load_trained_tokenizer, train_tokenizer)


def test_gpt2_ids_match_openai():
    tokenizer = get_tokenizer("gpt2")
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.eot_id == 50256
    # the chat specials come right after GPT-2's 50257 ids
    assert tokenizer.special_id(IM_START) == 50257
    assert tokenizer.special_id(IM_END) == 50258
    assert tokenizer.vocab_size == 50259


def test_cl100k_ids_match_openai():
    tokenizer = get_tokenizer("cl100k")
    assert tokenizer.encode("hello world") == [15339, 1917]
    assert tokenizer.eot_id == 100257
    assert tokenizer.special_id(IM_START) > 100257


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_round_trip_of_arbitrary_unicode(name, text):
    tokenizer = get_tokenizer(name)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
@settings(max_examples=100, deadline=None)
@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20), special=st.sampled_from(CHAT_SPECIALS))
def test_user_text_never_becomes_a_special_token(name, prefix, suffix, special):
    tokenizer = get_tokenizer(name)
    ids = tokenizer.encode(prefix + special + suffix)
    assert not set(ids) & tokenizer.special_ids
    assert tokenizer.decode(ids) == prefix + special + suffix


def test_every_tokenizer_has_the_chat_specials():
    for name in ("gpt2", "cl100k"):
        tokenizer = get_tokenizer(name)
        ids = {tokenizer.special_id(token) for token in CHAT_SPECIALS}
        assert len(ids) == len(CHAT_SPECIALS)
        assert max(ids) < tokenizer.vocab_size


def test_token_bytes_counts_utf8_bytes_and_zero_for_specials():
    tokenizer = get_tokenizer("gpt2")
    lengths = tokenizer.token_bytes()
    text = "héllo wörld ✓"
    assert sum(lengths[i] for i in tokenizer.encode(text)) == len(text.encode("utf-8"))
    assert lengths[tokenizer.eot_id] == 0 and lengths[tokenizer.special_id(IM_START)] == 0


def _corpus(num_documents: int = 300) -> list[str]:
    rng = random.Random(0)
    words = "the cat sat on a mat while tokenizers merge frequent byte pairs into tokens".split()
    return [" ".join(rng.choice(words) for _ in range(40)) for _ in range(num_documents)]


def test_trained_tokenizer_saves_in_tiktoken_format_and_loads_back(tmp_path):
    out = tmp_path / "tokenizers" / "tiny-bpe"
    trained = train_tokenizer(iter(_corpus()), vocab_size=300, out_dir=out)
    assert (out / "tokenizer.tiktoken").is_file() and (out / "tokenizer.json").is_file()
    assert not (tmp_path / "tokenizers" / "tiny-bpe.tmp").exists()

    loaded = load_trained_tokenizer(out)
    assert isinstance(loaded.encoding, tiktoken.Encoding)
    text = "the cat sat on the mat, ünïcode too"
    assert loaded.encode(text) == trained.encode(text)
    assert loaded.decode(loaded.encode(text)) == text
    # merges were learned: frequent words take fewer tokens than bytes
    assert len(loaded.encode("the cat sat on a mat")) < len("the cat sat on a mat")
    # specials sit after the base vocabulary and cannot be forged from text
    assert loaded.special_id(END_OF_TEXT) >= 256
    assert not set(loaded.encode(IM_START)) & loaded.special_ids

    # found by name under a data dir, and listed
    assert get_tokenizer("tiny-bpe", data_dir=tmp_path).encode(text) == trained.encode(text)
    names = [entry["name"] for entry in list_tokenizers(tmp_path)]
    assert names == ["gpt2", "cl100k", "tiny-bpe"]


def test_train_tokenizer_reports_progress_and_a_stop_writes_nothing(tmp_path):
    calls = []
    out = tmp_path / "tokenizers" / "stopped"
    result = train_tokenizer(iter(_corpus(2500)), vocab_size=300, out_dir=out,
                             on_progress=lambda done, total: calls.append(done), should_stop=lambda: len(calls) == 2)
    assert result is None and calls == [1000, 2000]
    assert not (tmp_path / "tokenizers").exists() or not any((tmp_path / "tokenizers").iterdir())
    calls.clear()
    trained = train_tokenizer(iter(_corpus(2500)), vocab_size=300, out_dir=out,
                              on_progress=lambda done, total: calls.append(done), should_stop=lambda: False)
    assert calls == [1000, 2000] and (out / "tokenizer.json").is_file() and trained.vocab_size > 300


def test_bad_tokenizer_names_and_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(iter(_corpus(10)), vocab_size=100, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="invalid tokenizer name"):
        train_tokenizer(iter(_corpus(10)), vocab_size=300, out_dir=tmp_path / "gpt2")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer("does-not-exist", data_dir=tmp_path)
