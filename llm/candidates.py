"""Candidate answers for people to compare: several completions of one prompt, each one reproducible.

    candidates(model, tokenizer, prompt, settings, seed) -> [Candidate]   one shared prefill, n answers
    regenerate(model, tokenizer, prompt, sampling, seed) -> Candidate      one stored answer again, exactly
    prompt_seed(seed, prompt_index, slot) -> int                            the seed of one prompt's batch

The prompt (a text, or a conversation ending with a user turn) is rendered with the one chat template
(`llm.generate.chat_prompt`) and its n answers are sampled together by `llm.generate`: the prompt is
prefilled once and its KV cache shared by the n samples.

How one answer is reproduced: sample i of a batch seeded with `seed` draws from its own generator,
seeded with `sample_seed(seed, i)` (llm/generate.py), so it is exactly the single-sample run with that
seed. A candidate therefore stores the batch `seed` (a 31-bit number: it goes to an INTEGER column,
32-bit on PostgreSQL, where `sample_seed`'s 64-bit values would not fit) and, in its `sampling`
settings, its `sample_index` and the batch size `samples`. `regenerate` replays sample `sample_index`
alone; with `alone=False` it replays the whole batch and picks it. Both give the same tokens on the
CPU (tests/llm/test_candidates.py); on a GPU a different batch size can change the last bits of a matmul,
so replaying the batch is the bit-exact choice there.

torch is imported only when answers are generated: job declarations read MAX_SEED and MAX_CANDIDATES.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch.nn as nn

    from llm.generate import SamplingSettings

# Seeds stored with a completion stay below 2**31: a signed 32-bit INTEGER column holds them everywhere.
MAX_SEED = 2**31 - 1
# The sampling settings a candidate records, besides its place in its batch.
SETTING_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens")
MAX_CANDIDATES = 16  # per prompt and model: the KV cache grows with every sample


@dataclass(frozen=True)
class Candidate:
    text: str
    token_count: int            # tokens generated, without the stop token
    seed: int                   # the batch's seed; with `sampling` and the model it regenerates the answer
    sampling: dict[str, Any]    # SETTING_FIELDS + sample_index + samples, JSON-ready


def as_conversation(prompt: str | Sequence[dict]) -> list[dict]:
    """A text prompt is one user turn; a conversation is used as it is."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def prompt_seed(seed: int, prompt_index: int, slot: int = 0) -> int:
    """The seed of the batch for prompt number `prompt_index` from model slot `slot` of a run seeded `seed`.

    A hash, not `seed + prompt_index`: runs seeded 1 and 2 must not share answers one prompt apart, and
    the two slots of a run (say one model at two temperatures) must not draw the same noise.
    """
    digest = hashlib.blake2b(f"{seed}:{prompt_index}:{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (MAX_SEED + 1)


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")


def _settings_record(settings: "SamplingSettings") -> dict[str, Any]:
    values = asdict(settings)
    return {name: values[name] for name in SETTING_FIELDS}


def candidates(model: "nn.Module", tokenizer, prompt: str | Sequence[dict], settings: "SamplingSettings",
               seed: int, num_samples: int) -> list[Candidate]:
    """`num_samples` answers to `prompt` sampled together from one prefill; `settings.seed` is ignored
    (the batch is seeded with `seed`, which each candidate records)."""
    # Here, not at the top: llm.generate imports torch, and the generate kind's declaration reads this
    # module's limits (MAX_CANDIDATES, MAX_SEED) in the torch-free job layer.
    from llm.generate import SamplingSettings, chat_prompt, generate_ids

    _check_seed(seed)
    if not 1 <= num_samples <= MAX_CANDIDATES:
        raise ValueError(f"num_samples must be from 1 to {MAX_CANDIDATES}, got {num_samples}")
    ids, stops = chat_prompt(tokenizer, as_conversation(prompt))
    seeded = SamplingSettings(**{**asdict(settings), "seed": seed})
    answers = generate_ids(model, tokenizer, ids, seeded, num_samples, stop_ids=stops)
    record = _settings_record(seeded)
    return [Candidate(text=tokenizer.decode(answer), token_count=len(answer), seed=seed,
                      sampling={**record, "sample_index": index, "samples": num_samples})
            for index, answer in enumerate(answers)]


def regenerate(model: "nn.Module", tokenizer, prompt: str | Sequence[dict], sampling: dict[str, Any], seed: int, *,
               alone: bool = True) -> Candidate:
    """The candidate stored with `sampling` and `seed`, generated again (see the module docstring)."""
    from llm.generate import SamplingSettings, chat_prompt, generate_ids, sample_seed  # lazy: torch, see candidates()

    _check_seed(seed)
    missing = [name for name in (*SETTING_FIELDS, "sample_index", "samples") if name not in sampling]
    if missing:
        raise ValueError(f"the stored sampling settings lack {', '.join(missing)}: this completion cannot be "
                         f"regenerated")
    index, samples = int(sampling["sample_index"]), int(sampling["samples"])
    if not 0 <= index < samples:
        raise ValueError(f"sample_index {index} is outside a batch of {samples}")
    settings = SamplingSettings(**{name: sampling[name] for name in SETTING_FIELDS})
    if not alone:
        return candidates(model, tokenizer, prompt, settings, seed, samples)[index]
    ids, stops = chat_prompt(tokenizer, as_conversation(prompt))
    single = SamplingSettings(**{**asdict(settings), "seed": sample_seed(seed, index)})
    [answer] = generate_ids(model, tokenizer, ids, single, 1, stop_ids=stops)
    return Candidate(text=tokenizer.decode(answer), token_count=len(answer), seed=seed, sampling=dict(sampling))
