"""The synthetic tasks (llm/synthetic_tasks.py): files the dataset readers accept, checkers that tell the answers
apart, held-out prompts with fresh nouns, and families that share no content word (the sweep's and the tests')."""

import re

import pytest

from llm import synthetic_tasks as tasks
from llm.chat_data import read_chat, read_preference

FUNCTION_WORDS = {"a", "the", "is", "it", "in", "me", "we", "this", "what", "which", "for", "many", "word", "thing"}


def content_words(family: tasks.Family) -> set[str]:
    texts = (family.nouns + family.adjectives + family.places + family.verbs + family.questions + family.statements
             + (family.answer.format(word=""), family.long_clause.format(adjective="", place="")))
    texts += tuple(phrase for rule in family.rules.values() for phrase in rule.preferred + rule.other)
    return {word for text in texts for word in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", text.lower()))
            } - FUNCTION_WORDS


def test_the_families_share_no_content_word_and_no_rule():
    assert content_words(tasks.SWEEP) & content_words(tasks.TEST) == set()
    assert tasks.SWEEP.answer != tasks.TEST.answer  # and the rules' words are content words: none shared


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_format_answers_follow_their_own_family_only(family, tmp_path):
    other = next(name for name in tasks.FAMILIES if name != family)
    chats = tasks.format_conversations(50, seed=0, family=family)
    answers = [chat["messages"][1]["content"] for chat in chats]
    assert all(tasks.follows_format(answer, family) for answer in answers)
    assert not any(tasks.follows_format(answer, other) for answer in answers)
    assert not tasks.follows_format(answers[0] + " And more.", family)
    assert not tasks.follows_format(answers[0].replace(".", ""), family)
    read = read_chat(tasks.write_jsonl(tmp_path / "chats.jsonl", chats))
    assert read == [chat["messages"] for chat in chats]


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_held_out_prompts_bring_nouns_no_training_example_has(family):
    chosen = tasks.get_family(family)
    training = " ".join(c["messages"][0]["content"] for c in tasks.format_conversations(300, 0, family))
    held_out = " ".join(p[0]["content"] for p in tasks.format_prompts(300, 0, family, held_out=True))
    words = lambda text: set(re.findall(r"[a-z]+", text.lower())) & set(chosen.nouns)  # noqa: E731
    assert words(training) and words(held_out) and not words(training) & words(held_out)


@pytest.mark.parametrize("family,rule", [(family, rule) for family in tasks.FAMILIES
                                         for rule in tasks.FAMILIES[family].rules])
def test_each_rule_tells_chosen_from_rejected(family, rule, tmp_path):
    pairs = tasks.preference_pairs(100, seed=1, family=family, rule=rule, held_out=True)
    for pair in pairs:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert tasks.has_property(chosen, family, rule) and not tasks.has_property(rejected, family, rule)
        assert tasks.well_formed(chosen, family) and tasks.well_formed(rejected, family)
    assert len({pair["chosen"][0]["content"] for pair in pairs}) > 50  # varied, not one pair repeated
    assert read_preference(tasks.write_jsonl(tmp_path / "pairs.jsonl", pairs))[0]["chosen"] == pairs[0]["chosen"]
    mixed = tasks.mixed_conversations(200, seed=2, family=family, rule=rule)
    share = sum(tasks.has_property(chat["messages"][-1]["content"], family, rule) for chat in mixed) / len(mixed)
    assert 0.35 < share < 0.65


def test_a_garbled_answer_is_not_well_formed_even_with_the_keyword():
    assert tasks.well_formed("Your harbor is purple and dusty.", "sweep")
    assert not tasks.well_formed("Your harbor is purpler teapot is green and sturdy.", "sweep")
    assert tasks.has_property("purple purple purple", "sweep", "keyword")
    assert not tasks.well_formed("purple purple purple", "sweep")


def test_prose_is_seeded_and_uses_every_noun(tmp_path):
    assert tasks.prose_documents(5, 3, "test") == tasks.prose_documents(5, 3, "test")
    assert tasks.prose_documents(5, 3, "test") != tasks.prose_documents(5, 4, "test")
    text = tasks.write_prose(tmp_path / "prose.txt", 400, 0, "sweep").read_text()
    assert set(tasks.SWEEP.nouns) <= set(re.findall(r"[a-z]+", text.lower()))
    assert len(text.split("\n\n")) == 400


def test_unknown_family_and_rule_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        tasks.format_conversations(1, 0, "nope")
    with pytest.raises(ValueError, match="family 'sweep' has no rule 'polite'"):
        tasks.preference_pairs(1, 0, "sweep", "polite")
