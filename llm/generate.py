"""Sampling from a GPT with its KV cache: token ids, whole texts, or a stream of text deltas.

The decoding loop (`generate_tokens`) prefills the prompt once with batch 1, then copies that cache
for `num_samples` completions and decodes them together: one forward pass per step for all samples.
This is what makes "K candidates per prompt" (chat arena, labeling) cheap: the prompt is never
recomputed per candidate. `generate_batch_tokens` does the same for several prompts at once (GRPO's
step): one prefill of the prompts left-padded to the longest, each prompt's cache copied to its samples.

Randomness: sample i draws from its own `torch.Generator` seeded with `sample_seed(seed, i)`
(sample 0 uses `seed` itself). So the same settings give the same texts, and completion i of a
K-sample run is exactly the single-sample run with seed `sample_seed(seed, i)`: any one candidate
can be reproduced alone.

Context length: prompt + new tokens never exceed the model's `block_size`. When they would, the
prompt is truncated from the left (the oldest tokens go), and at most `block_size - 1` new tokens
are generated so at least one prompt token remains.
"""

from __future__ import annotations

import codecs
import secrets
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

# Finished samples keep being decoded (the batch stays rectangular) but their outputs read as this.
FINISHED = -1
# Added to the seed per sample index. A large odd 64-bit constant (2^64 / golden ratio) spreads the
# sub-seeds far apart, so runs seeded 0, 1, 2... do not share samples (as seed + index would).
_SEED_STRIDE = 0x9E3779B97F4A7C15


@dataclass
class SamplingSettings:
    max_new_tokens: int = 128
    temperature: float = 1.0          # 0 = greedy (argmax)
    top_k: int | None = None          # keep only the k most likely tokens
    top_p: float | None = None        # nucleus: keep the smallest set of tokens whose probability >= top_p
    seed: int | None = None           # None = a fresh random seed per call
    stop_at_end_of_text: bool = True  # stop a sample when it emits <|endoftext|>

    def __post_init__(self):
        # Settings come straight from web forms: fail with a readable message, not a torch error.
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (off), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None (off), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` in a run seeded with `seed` (index 0 -> `seed`)."""
    return (seed + index * _SEED_STRIDE) % 2**64


def make_generators(settings: SamplingSettings, num_samples: int,
                    device: torch.device | str = "cpu", seed: int | None = None) -> list[torch.Generator]:
    """One generator per sample, so each sample's randomness is independent of the batch it runs in.
    `seed` overrides the settings' (the seed of one prompt of several sampled together)."""
    seed = seed if seed is not None else settings.seed if settings.seed is not None else secrets.randbits(63)
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, i)) for i in range(num_samples)]


def _race(probs: torch.Tensor, generators: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Draw one index per row of `probs` (B, n): argmax(p / E) with E ~ Exp(1) picks i with probability p_i.

    This is the trick torch.multinomial uses internally; doing it ourselves lets every row use its own
    generator (one noise vector per sample), which multinomial cannot.
    """
    noise = torch.empty_like(probs)
    if generators is None or isinstance(generators, torch.Generator):
        noise.exponential_(generator=generators)
    else:
        if len(generators) != probs.shape[0]:
            raise ValueError(f"{len(generators)} generators for {probs.shape[0]} rows")
        for row, generator in enumerate(generators):
            noise[row].exponential_(generator=generator)
    # A zero draw would give p/0 = inf (or nan for a filtered-out p = 0): keep the noise positive.
    noise.clamp_(min=torch.finfo(noise.dtype).tiny)
    return probs.div_(noise).argmax(dim=-1)


def sample_next(logits: torch.Tensor, settings: SamplingSettings,
                generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Pick the next token for each row of `logits` (B, vocab) -> (B,) ids.

    `generator` is one generator for the whole batch or one per row (see `make_generators`).
    """
    if settings.greedy:
        return logits.argmax(dim=-1)
    candidate_ids = None  # when set, `scaled` holds only those candidates' logits, most likely first
    if settings.top_k is not None and settings.top_k < logits.shape[-1]:
        # Temperature does not change the order, so pick the k candidates first: everything after
        # (scaling, softmax, noise) then works on k values instead of the whole vocabulary.
        logits, candidate_ids = torch.topk(logits, settings.top_k, dim=-1)
    # float32: a bf16/fp16 model's logits are too coarse for softmax over ~50k tokens.
    scaled = logits.float()
    if settings.temperature != 1.0:
        scaled = scaled / settings.temperature
    if settings.top_p is not None and settings.top_p < 1.0:
        if candidate_ids is None:
            scaled, candidate_ids = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.softmax(scaled, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        drop = mass_before >= settings.top_p        # already covered: this token is outside the nucleus
        drop[..., 0] = False                        # the most likely token always stays
        scaled = scaled.masked_fill(drop, float("-inf"))
    choice = _race(torch.softmax(scaled, dim=-1), generator)
    if candidate_ids is None:
        return choice
    return candidate_ids.gather(-1, choice.unsqueeze(-1)).squeeze(-1)


def fit_to_context(prompt_ids: Sequence[int], max_new_tokens: int, block_size: int) -> tuple[list[int], int]:
    """Clip (prompt, new tokens) to the context window: new tokens to block_size - 1, then the
    prompt from the left so prompt + new <= block_size."""
    max_new_tokens = min(max_new_tokens, block_size - 1)
    keep = block_size - max_new_tokens
    return list(prompt_ids[-keep:]), max_new_tokens


def generate_tokens(model: nn.Module, prompt_ids: Sequence[int], settings: SamplingSettings,
                    num_samples: int = 1, stop_ids: Iterable[int] | None = None,
                    vocab_size: int | None = None,
                    banned_ids: Iterable[int] | None = None) -> Iterator[torch.Tensor]:
    """Yield each step's new ids, a (num_samples,) tensor, until every sample stopped or the length ran out.

    `stop_ids`: a sample that emits one of these is finished; that step still yields the stop id,
    later steps yield FINISHED (-1) for it. `vocab_size`: sample only ids below it (the embedding is
    padded past the tokenizer's vocabulary, and those ids decode to nothing). `banned_ids`: ids never
    sampled (holes inside a tokenizer's id range, such as cl100k's unused ids, which cannot be decoded).
    """
    if not prompt_ids:
        raise ValueError("generate_tokens needs at least one prompt token (use <|endoftext|> to start a document)")
    return generate_batch_tokens(model, [prompt_ids], [settings.seed], settings, num_samples, stop_ids, vocab_size,
                                 banned_ids)


# As a decorator on a generator function, inference_mode is entered and left around each step, so it
# never leaks into the caller's code between two yields (a `with` block around the loop would).
@torch.inference_mode()
def generate_batch_tokens(model: nn.Module, prompts: Sequence[Sequence[int]], seeds: Sequence[int | None],
                          settings: SamplingSettings, num_samples: int = 1, stop_ids: Iterable[int] | None = None,
                          vocab_size: int | None = None,
                          banned_ids: Iterable[int] | None = None) -> Iterator[torch.Tensor]:
    """`generate_tokens` for several prompts at once: each step yields (len(prompts) x num_samples,) ids, prompt
    p's samples at rows p x num_samples ... Prompt p's samples draw from the generators of a run seeded
    `seeds[p]` (None: the settings' seed, or a fresh one), so each is what that prompt sampled alone would give
    (up to the rounding of a batched forward).

    The prompts are prefilled together, left-padded to the longest (`KVCache.pad_left`: per-row positions, no
    attention to padding), each prompt's cache is copied to its samples, and all samples decode together.
    """
    if not prompts or any(len(ids) == 0 for ids in prompts):
        raise ValueError("generate_tokens needs at least one prompt token (use <|endoftext|> to start a document)")
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    fitted = [fit_to_context(ids, settings.max_new_tokens, model.config.block_size) for ids in prompts]
    max_new_tokens = fitted[0][1]
    if max_new_tokens == 0:
        return
    prompts = [ids for ids, _ in fitted]
    longest = max(len(ids) for ids in prompts)
    rows = len(prompts) * num_samples
    device = next(model.parameters()).device
    generators = [generator for seed in seeds for generator in make_generators(settings, num_samples, device, seed)]
    stop = torch.tensor(sorted(set(stop_ids or ())), dtype=torch.long, device=device)
    check_stop = stop.numel() > 0
    banned = torch.tensor(sorted(set(banned_ids or ())), dtype=torch.long, device=device)

    def next_token_logits(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1, :vocab_size]
        return last.index_fill(-1, banned, float("-inf")) if banned.numel() else last

    was_training = model.training
    model.eval()  # no dropout while sampling; restored when the generator ends or is closed
    try:
        # The last new token is never fed back, so the cache needs prompt + new - 1 positions.
        cache = model.new_kv_cache(len(prompts), longest + max_new_tokens - 1)
        padding = [longest - len(ids) for ids in prompts]
        cache.pad_left(padding)
        # Padding slots hold the first token (any id does: no real query attends to them).
        prompt = torch.tensor([[ids[0]] * pad + ids for ids, pad in zip(prompts, padding)], dtype=torch.long,
                              device=device)
        # Prefill once per prompt; only the last position's logits are needed (skips a (P, vocab) matmul).
        logits, _ = model(prompt, kv_cache=cache, last_logits_only=True)
        last_logits = next_token_logits(logits)
        if num_samples > 1:
            cache.expand(rows)                      # every sample continues from its prompt
            last_logits = last_logits.repeat_interleave(num_samples, dim=0)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            next_ids = sample_next(last_logits, settings, generators)
            if check_stop:
                out = next_ids.masked_fill(finished, FINISHED)
                finished |= torch.isin(next_ids, stop)
            else:
                out = next_ids
            yield out
            # One host sync per step at most, and only when stopping is possible at all.
            if step == max_new_tokens - 1 or (check_stop and bool(finished.all())):
                return
            # Finished samples are fed too: dropping rows would mean re-packing the cache each time.
            logits, _ = model(next_ids.view(rows, 1), kv_cache=cache, last_logits_only=True)
            last_logits = next_token_logits(logits)
    finally:
        model.train(was_training)


def _prompt_ids(tokenizer, prompt: str | Sequence[int]) -> list[int]:
    """Text is encoded as ordinary text; a list of ids (e.g. a chat template with specials) is used as is.
    An empty prompt starts a fresh document: <|endoftext|> is what separates documents in training."""
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    return ids or [tokenizer.eot_id]


def _undecodable_ids(tokenizer) -> list[int]:
    """Ids below vocab_size that are neither a token nor a special (cl100k has 16): tiktoken cannot decode them."""
    specials = tokenizer.special_ids
    return [i for i in np.flatnonzero(tokenizer.token_bytes() == 0).tolist() if i not in specials]


def _token_steps(model: nn.Module, tokenizer, prompt: str | Sequence[int], settings: SamplingSettings,
                 num_samples: int, stops: set[int]) -> Iterator[torch.Tensor]:
    """`generate_tokens` for a tokenizer: its vocabulary bounds what is sampled, undecodable ids never are."""
    return generate_tokens(model, _prompt_ids(tokenizer, prompt), settings, num_samples, stops,
                           tokenizer.vocab_size, _undecodable_ids(tokenizer))


def _stop_ids(tokenizer, settings: SamplingSettings, stop_ids: Iterable[int] | None) -> set[int]:
    ids = set(stop_ids or ())
    if settings.stop_at_end_of_text:
        ids.add(tokenizer.eot_id)
    return ids


def generate_text(model: nn.Module, tokenizer, prompt: str | Sequence[int], settings: SamplingSettings,
                  num_samples: int = 1, stop_ids: Iterable[int] | None = None) -> list[str]:
    """`num_samples` completions of `prompt` (text or ids), without the prompt and without the stop token."""
    completions = generate_ids(model, tokenizer, prompt, settings, num_samples, stop_ids)
    return [tokenizer.decode(ids) for ids in completions]


def generate_ids(model: nn.Module, tokenizer, prompt: str | Sequence[int], settings: SamplingSettings,
                 num_samples: int = 1, stop_ids: Iterable[int] | None = None) -> list[list[int]]:
    """The token ids of `generate_text`'s completions (for counting what was generated, not re-encoding it)."""
    stops = _stop_ids(tokenizer, settings, stop_ids)
    completions: list[list[int]] = [[] for _ in range(num_samples)]
    done = [False] * num_samples
    for step_ids in _token_steps(model, tokenizer, prompt, settings, num_samples, stops):
        for sample, token in enumerate(step_ids.tolist()):
            if done[sample]:
                continue
            if token in stops:
                done[sample] = True
            else:
                completions[sample].append(token)
    return completions


def stream_text(model: nn.Module, tokenizer, prompt: str | Sequence[int], settings: SamplingSettings,
                stop_ids: Iterable[int] | None = None) -> Iterator[str]:
    """Yield the completion as text deltas while it is generated; "".join(deltas) == generate_text(...)[0].

    A character can span several tokens (GPT-2's byte-level BPE splits "🙂" into 3 tokens). An
    incremental UTF-8 decoder holds back an incomplete sequence until its last byte arrives, so a
    delta never contains half a character (a replacement char is emitted only for bytes that can
    never become valid, exactly as a one-shot decode of the whole completion would).
    """
    stops = _stop_ids(tokenizer, settings, stop_ids)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for step_ids in _token_steps(model, tokenizer, prompt, settings, 1, stops):
        token = int(step_ids[0])
        if token in stops:
            break
        delta = decoder.decode(tokenizer.encoding.decode_single_token_bytes(token))
        if delta:
            yield delta
    tail = decoder.decode(b"", final=True)  # bytes of a character that never completed
    if tail:
        yield tail


# ----------------------------------------------------------------------------- chat

def chat_prompt(tokenizer, messages: Sequence[dict], system_prompt: str | None = None) -> tuple[list[int], set[int]]:
    """(prompt ids, stop ids) of the assistant's next turn: the conversation rendered with the one chat
    template (`llm.chat.render_for_completion`, after an optional system prompt), stopping at <|im_end|>.

    <|im_start|> stops too: a reply never contains it, and a half-trained model that starts a new turn
    instead of ending its own would otherwise write the user's next message as well.
    """
    from llm.chat import end_of_turn_id, render_for_completion, with_system_prompt
    from llm.tokenizer import IM_START

    ids = render_for_completion(tokenizer, with_system_prompt(messages, system_prompt))
    return ids, {end_of_turn_id(tokenizer), tokenizer.special_id(IM_START)}


def chat_reply(model: nn.Module, tokenizer, messages: Sequence[dict], settings: SamplingSettings, *,
               stream: bool = False, system_prompt: str | None = None) -> str | Iterator[str]:
    """The assistant's reply to `messages` ({"role", "content"} dicts): the text, or with `stream` an
    iterator of text deltas. The CLI's chat, the Chat tab and the arena share this. For K candidate
    replies at once, pass `chat_prompt`'s ids and stops to `generate_text(..., num_samples=K)`."""
    ids, stops = chat_prompt(tokenizer, messages, system_prompt)
    if stream:
        return stream_text(model, tokenizer, ids, settings, stop_ids=stops)
    return generate_text(model, tokenizer, ids, settings, stop_ids=stops)[0]
