"""Synthetic tasks with known answers: prose to pretrain on, a fixed answer format, and preference rules.

They exist to measure whether training at the defaults learns (bench/sweep_defaults.py fits the default
learning rates on them, tests/llm/test_defaults_learn.py checks the defaults on them) and to give a first loop
bundled data. Three kinds, each drawn from a `Family` (word lists, templates, format and rules):

  prose        `prose_documents`: ordinary sentences over the family's whole vocabulary, the "pretraining
               corpus" of a base model that has read the words but never seen a chat.
  format       `format_conversations`: chats whose every answer has one fixed shape around a word copied
               from the question (family "sweep": "Answer: lantern. Done."); `follows_format(text, family)`.
  preference   `preference_pairs`: TRL-style {"prompt", "chosen", "rejected"} pairs that differ only in one
               property of the answer (`Rule`: a keyword class, the length, a politeness marker);
               `has_property(text, family, rule)` checks it on any answer.

Every generator takes a seed and a family. The families share no word, template, format or marker, so a test
run on family "test" checks defaults on a task the sweep (family "sweep") never saw. Within a family the nouns
are split in two: training data uses one half, `held_out=True` the other, so held-out prompts bring words the
fine-tuning never showed (the prose has them all, as a real base model has read words no chat set contains).
(tests/support/polite.py has an older politeness rule, a polite adverb inside the answer, that the reward/DPO
unit tests learn; the "polite" rule here is a closing phrase, kept apart so the two task sets stay distinct.)

Output records are the normal forms of llm/chat_data.py ({"messages": [...]} chats, explicit preference
pairs), writable as JSONL with `write_jsonl` (prose: `write_prose`, blank-line separated documents).
Imports no torch.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

RULE_KINDS = ("keyword", "length", "polite")


@dataclass(frozen=True)
class Rule:
    """A preference rule: the chosen answer has the property, the rejected one has not, all else equal.

    keyword: the answer names a word of `preferred` (the rejected one a word of `other`, in the same slot).
    length:  the answer is short (at most `short_words` words); the rejected one adds a long clause.
    polite:  the answer ends with one of `preferred` (closing phrases); the rejected one with one of `other`.
    """

    kind: str
    preferred: tuple[str, ...] = ()
    other: tuple[str, ...] = ()
    short_words: int = 8


@dataclass(frozen=True)
class Family:
    """One vocabulary and its templates. Nouns at even positions are training words, odd ones held out."""

    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    places: tuple[str, ...]
    verbs: tuple[str, ...]          # past tense, for the prose
    questions: tuple[str, ...]      # format-task prompts, with {noun}, {adjective}, {place}
    answer: str                     # the format, with {word}
    answer_pattern: str             # a regular expression the whole answer must match
    statements: tuple[str, ...]     # preference-task answers, with {noun}, {adjective}, {place}, {slot}
    long_clause: str                # what the length rule's rejected answer adds, with {adjective}, {place}
    rules: dict                     # rule name -> Rule

    def nouns_of(self, held_out: bool) -> tuple[str, ...]:
        return self.nouns[1::2] if held_out else self.nouns[0::2]


SWEEP = Family(
    name="sweep",
    nouns=("river", "garden", "lantern", "kettle", "harbor", "meadow", "engine", "ladder", "mirror", "basket",
           "castle", "bridge", "forest", "candle", "wagon", "tower", "island", "valley", "barrel", "saddle",
           "ribbon", "anchor", "pillow", "violin", "teapot", "shovel", "helmet", "compass", "blanket", "chimney",
           "orchard", "tunnel", "market", "cottage", "fountain", "feather"),
    adjectives=("quiet", "bright", "narrow", "heavy", "gentle", "ancient", "hollow", "sturdy", "dusty", "silent",
                "shiny", "tall", "warm", "old", "small", "wide"),
    places=("village", "city", "coast", "hill", "farm", "school", "station", "port"),
    verbs=("found", "painted", "carried", "repaired", "visited", "cleaned", "watched", "described"),
    questions=("Which word names the {adjective} {noun}?", "What did we see near the {place}? It was a {noun}.",
               "Tell me the key word in this: the {noun} by the {place}.",
               "I saw a {adjective} {noun} today. What was it?", "Name the thing: {noun}."),
    answer="Answer: {word}. Done.",
    answer_pattern=r"Answer: [a-z]+\. Done\.",
    statements=("The {noun} near the {place} is {slot}.", "I think the {adjective} {noun} looks {slot}.",
                "Your {noun} is {slot} and {adjective}."),
    long_clause=", and it has stood by the {place} for many long years while {adjective} people walked past it",
    rules={"keyword": Rule("keyword", preferred=("red", "blue", "green", "yellow", "purple", "orange"),
                           other=("round", "square", "flat", "curved", "pointed", "oval")),
           "length": Rule("length", short_words=9)},
)

TEST = Family(
    name="test",
    nouns=("pebble", "window", "carpet", "bucket", "rocket", "parrot", "puzzle", "trumpet", "cabinet", "ferry",
           "glacier", "lighthouse", "notebook", "pudding", "scarf", "tractor", "umbrella", "vineyard", "whistle",
           "wallet", "canyon", "jacket", "kitchen", "ladle", "mitten", "needle", "oyster", "pumpkin", "quilt",
           "raincoat", "sandal", "thimble", "volcano", "walrus", "zipper", "bicycle"),
    adjectives=("muddy", "fragile", "crooked", "sleepy", "spotted", "rusty", "velvet", "frozen", "noisy", "clever",
                "golden", "striped", "tiny", "soft", "bitter", "lucky"),
    places=("desert", "library", "bakery", "greenhouse", "museum", "garage", "laundry", "airport"),
    verbs=("borrowed", "noticed", "dropped", "followed", "weighed", "counted", "opened", "ignored"),
    questions=("Please pick out the main thing in: a {adjective} {noun}.",
               "Someone left a {noun} at the {place}. Which object?", "Give me one word for this {noun}.",
               "Do you know what a {noun} is?", "Over at the {place} there is a {adjective} {noun}. Which item?"),
    answer="Reply ({word}) -- over.",
    answer_pattern=r"Reply \([a-z]+\) -- over\.",
    statements=("We kept the {noun} from the {place}, {slot}.", "This {adjective} {noun} came back, {slot}.",
                "Look at the {noun}, {slot}."),
    long_clause=" after a slow {adjective} trip to the {place} that took most of the week",
    rules={"polite": Rule("polite", preferred=("thank you kindly", "with many thanks", "much appreciated"),
                          other=("whatever", "deal with it", "not my problem")),
           "keyword": Rule("keyword", preferred=("otter", "falcon", "badger", "heron", "lynx", "beaver"),
                           other=("copper", "zinc", "nickel", "iron", "brass", "cobalt"))},
)

FAMILIES = {family.name: family for family in (SWEEP, TEST)}


def get_family(family: str | Family) -> Family:
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def get_rule(family: str | Family, rule: str) -> Rule:
    family = get_family(family)
    if rule not in family.rules:
        raise ValueError(f"family {family.name!r} has no rule {rule!r}; it has {', '.join(family.rules)}")
    return family.rules[rule]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# ----------------------------------------------------------------------------- prose

def prose_documents(count: int, seed: int, family: str | Family = "sweep") -> list[str]:
    """`count` short documents of plain sentences over the family's whole vocabulary, rule words and the
    format's words included (a base model has read them; it has never seen them arranged as the tasks do)."""
    family = get_family(family)
    rng = random.Random(f"prose:{family.name}:{seed}")
    extra = [word for rule in family.rules.values() for phrase in rule.preferred + rule.other
             for word in phrase.split()] + _words(family.answer.format(word=""))

    def sentence() -> str:
        noun, other = rng.choice(family.nouns), rng.choice(family.nouns)
        adjective, place, verb = rng.choice(family.adjectives), rng.choice(family.places), rng.choice(family.verbs)
        word = rng.choice(extra)
        shape = rng.randrange(5)
        if shape == 0:
            text = f"the {adjective} {noun} {verb} the {other} near the {place}"
        elif shape == 1:
            text = f"we {verb} a {noun} and a {other} in the {place}"
        elif shape == 2:
            text = f"the word {word} came up when the {noun} was {adjective}"
        elif shape == 3:
            text = f"every {noun} in the {place} looked {adjective} and {word}"
        else:
            text = f"someone said {word} because the {noun} {verb} the {other}"
        return text[0].upper() + text[1:] + "."

    return [" ".join(sentence() for _ in range(rng.randint(4, 9))) for _ in range(count)]


def write_prose(path: str | Path, count: int, seed: int, family: str | Family = "sweep") -> Path:
    """The documents as a .txt corpus (blank-line separated, what `workbench prepare` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(prose_documents(count, seed, family)) + "\n")
    return path


# ----------------------------------------------------------------------------- the answer format

def _question(family: Family, rng: random.Random, held_out: bool) -> tuple[str, str]:
    noun = rng.choice(family.nouns_of(held_out))
    template = rng.choice(family.questions)
    return template.format(noun=noun, adjective=rng.choice(family.adjectives), place=rng.choice(family.places)), noun


def format_prompts(count: int, seed: int, family: str | Family = "sweep", held_out: bool = True) -> list[list[dict]]:
    """`count` one-turn prompts of the format task (held-out vocabulary by default)."""
    family = get_family(family)
    rng = random.Random(f"format:{family.name}:{seed}:{held_out}")
    return [[{"role": "user", "content": _question(family, rng, held_out)[0]}] for _ in range(count)]


def format_conversations(count: int, seed: int, family: str | Family = "sweep",
                         held_out: bool = False) -> list[dict]:
    """`count` chats {"messages": [user, assistant]} whose answer is the family's format around the question's
    noun (training vocabulary unless `held_out`)."""
    family = get_family(family)
    rng = random.Random(f"format:{family.name}:{seed}:{held_out}")
    chats = []
    for _ in range(count):
        question, noun = _question(family, rng, held_out)
        chats.append({"messages": [{"role": "user", "content": question},
                                   {"role": "assistant", "content": family.answer.format(word=noun)}]})
    return chats


def follows_format(text: str, family: str | Family = "sweep") -> bool:
    """The whole answer (surrounding spaces aside) is the family's format around one lower-case word."""
    return re.fullmatch(get_family(family).answer_pattern, text.strip()) is not None


# ----------------------------------------------------------------------------- preference rules

def _answers(family: Family, rule: Rule, rng: random.Random, held_out: bool) -> tuple[str, str, str]:
    """(question, chosen, rejected) for one pair."""
    noun = rng.choice(family.nouns_of(held_out))
    adjective, place = rng.choice(family.adjectives), rng.choice(family.places)
    question = rng.choice(family.questions).format(noun=noun, adjective=adjective, place=place)
    statement = rng.choice(family.statements)
    fill = dict(noun=noun, adjective=adjective, place=place)
    if rule.kind == "keyword":
        chosen = statement.format(slot=rng.choice(rule.preferred), **fill)
        rejected = statement.format(slot=rng.choice(rule.other), **fill)
    elif rule.kind == "length":
        chosen = statement.format(slot=rng.choice(family.adjectives), **fill)
        clause = family.long_clause.format(adjective=rng.choice(family.adjectives), place=rng.choice(family.places))
        rejected = chosen[:-1] + clause + "."
    elif rule.kind == "polite":
        base = statement.format(slot="{closing}", **fill)
        chosen = base.format(closing=rng.choice(rule.preferred))
        rejected = base.format(closing=rng.choice(rule.other))
    else:
        raise ValueError(f"unknown rule kind {rule.kind!r}; choose one of {', '.join(RULE_KINDS)}")
    return question, chosen, rejected


def preference_pairs(count: int, seed: int, family: str | Family = "sweep", rule: str = "keyword",
                     held_out: bool = False) -> list[dict]:
    """`count` explicit preference pairs {"prompt", "chosen", "rejected"} (message lists) for `rule`."""
    family = get_family(family)
    chosen_rule = get_rule(family, rule)
    rng = random.Random(f"pairs:{family.name}:{rule}:{seed}:{held_out}")
    pairs = []
    for _ in range(count):
        question, chosen, rejected = _answers(family, chosen_rule, rng, held_out)
        pairs.append({"prompt": [{"role": "user", "content": question}],
                      "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]})
    return pairs


def mixed_conversations(count: int, seed: int, family: str | Family = "sweep", rule: str = "keyword") -> list[dict]:
    """Chats answered with the chosen or the rejected answer of a pair, half and half: the SFT start of a DPO
    run, which then samples both kinds (about half its answers have the property)."""
    rng = random.Random(f"mixed:{seed}")
    return [{"messages": pair["prompt"] + (pair["chosen"] if rng.random() < 0.5 else pair["rejected"])}
            for pair in preference_pairs(count, seed, family, rule)]


def has_property(text: str, family: str | Family = "sweep", rule: str = "keyword") -> bool:
    """Whether an answer has the property `rule` prefers (and not the one it rejects)."""
    checked = get_rule(family, rule)
    words = _words(text)
    if checked.kind == "keyword":
        return bool(set(words) & set(checked.preferred)) and not set(words) & set(checked.other)
    if checked.kind == "length":
        return 0 < len(words) <= checked.short_words
    joined = " ".join(words)
    def said(phrases):
        return any(re.search(rf"\b{phrase}\b", joined) for phrase in phrases)
    return said(checked.preferred) and not said(checked.other)


def well_formed(text: str, family: str | Family = "sweep") -> bool:
    """Whether an answer is one of the family's statements with its own words in every slot (a noun, an
    adjective, a place, and in the slot an adjective or a rule's word or phrase; optionally the long clause):
    what DPO must keep while it moves the property, so a share "with the property" counts no garbled answer."""
    family = get_family(family)
    def one_of(words) -> str:
        return "(?:" + "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True)) + ")"
    slot_words = set(family.adjectives) | {phrase for rule in family.rules.values()
                                           for phrase in rule.preferred + rule.other}
    fill = {"noun": one_of(family.nouns), "adjective": one_of(family.adjectives), "place": one_of(family.places),
            "slot": one_of(slot_words)}
    clause = re.escape(family.long_clause).replace(re.escape("{adjective}"), fill["adjective"]).replace(
        re.escape("{place}"), fill["place"])
    for statement in family.statements:
        pattern = re.escape(statement[:-1])
        for name, words in fill.items():
            pattern = pattern.replace(re.escape("{" + name + "}"), words)
        if re.fullmatch(f"{pattern}(?:{clause})?\\.", text.strip(), flags=re.IGNORECASE):
            return True
    return False


# ----------------------------------------------------------------------------- files

def write_jsonl(path: str | Path, records: list[dict]) -> Path:
    """One JSON object a line (what llm/chat_data.py reads as a chat or preference dataset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path
