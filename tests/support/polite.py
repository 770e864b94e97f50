"""The politeness preference rule the reward, DPO and best-of-N tests learn (a polite word preferred over a pushy
one in otherwise equal answers), the policies they start from, and the small runs they train."""

from __future__ import annotations

import json
import random

import torch

from llm.checkpoint import save_model
from llm.model import GPT, config_from_preset
from llm.reward_config import RewardConfig, reward_train_config
from llm.sft import sft
from llm.sft_config import SFTConfig, sft_train_config
from llm.tokenizer import get_tokenizer, train_tokenizer


POLITE = ["please", "kindly", "thanks", "gently", "carefully", "politely", "graciously", "warmly"]


PUSHY = ["now", "fast", "immediately", "quickly", "hurry", "instantly", "already", "urgently"]


VERBS = ["send", "bring", "open", "close", "check", "write", "read", "move", "find", "clean"]


THINGS = ["the report", "the door", "a letter", "the box", "my notes", "the plan", "the window", "a map"]


def polite_pairs(count, seed):
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        verb, thing, other = rng.choice(VERBS), rng.choice(THINGS), rng.choice(THINGS)
        question = f"What should I do with {thing}?"
        words = [verb.capitalize(), thing, "and", other]
        slot = rng.randrange(len(words) + 1)
        polite = " ".join(words[:slot] + [rng.choice(POLITE)] + words[slot:]) + "."
        rude = " ".join(words[:slot] + [rng.choice(PUSHY)] + words[slot:]) + "."
        pairs.append({"prompt": [{"role": "user", "content": question}],
                      "chosen": [{"role": "assistant", "content": polite}],
                      "rejected": [{"role": "assistant", "content": rude}], "source": "upload"})
    return pairs


def small_run(**overrides):
    settings = dict(max_steps=6, batch_size=4, block_size=64, eval_every=3, eval_batches=2, log_every=1,
                    checkpoint_every=0, warmup=1, device="cpu")
    return reward_train_config(RewardConfig(method="lora"), **{**settings, **overrides})


MARKERS = {word.lower() for word in POLITE + PUSHY}

def quiet(_line):
    pass


HELD_OUT = [pair["prompt"] for pair in polite_pairs(60, 99)]


def train_mixed_sft(base_dir, out_dir):
    """A full SFT on both kinds of answer, half and half, so it samples each about as often."""
    rng = random.Random(5)
    conversations = []
    for pair in polite_pairs(300, 6):
        answer = pair["chosen"] if rng.random() < 0.5 else pair["rejected"]
        conversations.append(pair["prompt"] + answer)
    full = SFTConfig(method="full")
    return sft(base_dir, conversations, out_dir, sft_config=full,
               train_config=sft_train_config(full, max_steps=600, batch_size=16, lr=3e-3, block_size=64,
                                             eval_every=0, warmup=10, device="cpu"), log=quiet)["model_dir"]


def is_polite(tokenizer, text: str) -> bool:
    words = set(text.lower().replace(".", " ").split())
    return bool(words & set(POLITE)) and not words & set(PUSHY)


def coherent(text: str) -> bool:
    """The task's grammar: a verb, a thing, "and", a thing, one polite or pushy word anywhere, one full stop."""
    text = text.strip()
    if not text.endswith(".") or text.count(".") != 1:
        return False
    words = text[:-1].lower().split()
    rest = [word for word in words if word not in MARKERS]
    things = [thing.lower().split() for thing in THINGS]
    return (len(words) - len(rest) == 1 and len(rest) == 6 and rest[0] in {verb.lower() for verb in VERBS}
            and rest[1:3] in things and rest[3] == "and" and rest[4:6] in things)


def coherent_sft_model(root):
    """A full SFT (300 steps) of a tiny GPT on polite and pushy answers, half and half, with a 400-id BPE (also
    what bench/dpo_degeneration.py measures the degeneration bounds and RPO's weight on)."""
    texts = [turn[0]["content"] for pair in polite_pairs(400, 11) for turn in (pair["prompt"], pair["chosen"],
                                                                              pair["rejected"])]
    train_tokenizer(iter(texts * 2), 400, root / "tokenizer", name="polite")
    tokenizer = get_tokenizer(str(root / "tokenizer"))
    torch.manual_seed(0)
    base = save_model(GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)), root / "base",
                      str(root / "tokenizer"))
    rng = random.Random(5)
    conversations = [pair["prompt"] + (pair["chosen"] if rng.random() < 0.5 else pair["rejected"])
                     for pair in polite_pairs(300, 6)]
    full = SFTConfig(method="full")
    return sft(base, conversations, root / "sft", sft_config=full, log=quiet,
               train_config=sft_train_config(full, max_steps=300, batch_size=16, lr=3e-3, block_size=64,
                                             eval_every=0, warmup=10, device="cpu"))["model_dir"]


def printed_result(out: str) -> dict:
    """The JSON result printed last (log lines come before it)."""
    return json.loads(out[out.rindex("\n{") + 1:] if not out.startswith("{") else out)
