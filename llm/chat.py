"""The one chat template: how a conversation becomes token ids, and which of them a model learns from.

    <|im_start|>system\n{content}<|im_end|>\n
    <|im_start|>user\n{content}<|im_end|>\n
    <|im_start|>assistant\n{content}<|im_end|>\n

SFT, Chat, candidate generation and the arena all render through here; nothing else spells the
special tokens. The specials enter the sequence only as ids placed by this module: message text is
encoded as ordinary text, so a user who types "<|im_start|>" gets those characters, not the token.

`render_conversation` returns a loss mask that is 1 on each assistant message's content **and its
<|im_end|>** and 0 everywhere else (system and user turns, role headers, the newline after
<|im_end|>). Training on the <|im_end|> is what teaches a model to stop; a template that masks it out
gives a model that rambles on into the next turn.

Tokenization is done piecewise (the role header, then the content), so the ids of a prompt rendered
for completion are exactly a prefix of the same conversation rendered for training.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from llm.tokenizer import IM_END, IM_START, Tokenizer

ROLES = ("system", "user", "assistant")
Message = dict  # {"role": one of ROLES, "content": str}


def has_chat_template(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer has the specials the template needs (every tokenizer made here has)."""
    specials = tokenizer.encoding.special_tokens_set
    return IM_START in specials and IM_END in specials


def end_of_turn_id(tokenizer: Tokenizer) -> int:
    """The id generation stops at for chat models."""
    return tokenizer.special_id(IM_END)


def _check(messages: Sequence[Message]) -> None:
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {index}: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {index}: content must be a string, got {type(content).__name__}")


def _header(tokenizer: Tokenizer, role: str) -> list[int]:
    return [tokenizer.special_id(IM_START)] + tokenizer.encode(f"{role}\n")


def render_conversation(tokenizer: Tokenizer, messages: Sequence[Message]) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a whole conversation; mask 1 on assistant content and its <|im_end|>."""
    _check(messages)
    end = tokenizer.special_id(IM_END)
    newline = tokenizer.encode("\n")
    ids: list[int] = []
    mask: list[int] = []
    for message in messages:
        learn = 1 if message["role"] == "assistant" else 0
        header = _header(tokenizer, message["role"])
        content = tokenizer.encode(message["content"]) + [end]
        ids += header + content + newline
        mask += [0] * len(header) + [learn] * len(content) + [0] * len(newline)
    return ids, mask


def render_for_completion(tokenizer: Tokenizer, messages: Sequence[Message]) -> list[int]:
    """Ids of the conversation so far followed by `<|im_start|>assistant\\n`: what the model continues.

    A trailing assistant message is dropped (regenerating the last answer means answering again).
    """
    messages = list(messages)
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    ids, _ = render_conversation(tokenizer, messages)
    return ids + _header(tokenizer, "assistant")


def render_text(messages: Iterable[Message]) -> str:
    """The template as text, for people (dataset previews, exported prompts); never tokenized."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def with_system_prompt(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """Prepend a system message unless the conversation already starts with one (or none is given)."""
    messages = list(messages)
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages
