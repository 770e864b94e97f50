"""The estimate every fine-tuning kind shares (SFT, reward, DPO, KTO, GRPO): trainable parameters, FLOPs, peak
memory and the step's shape, read off the model row, the dataset's stats and the params before a run is queued.

What differs between the kinds is what one example is and what its step computes, said by a `StepWork`; the time is
a probe of that step (`llm.throughput.ProbeShape`: the probe runs what the step runs):

    kind     trained sequences    head                       forward only, per step    computed once (full)
             per example
    sft      1 (the conversation) vocabulary, answers only   -                         -
    reward   2 (chosen, rejected) scalar, last position      -                         -
    dpo      2 (chosen, rejected) vocabulary, answers only   LoRA: the reference, 2    the reference, 2
    kto      1 (its answer)       vocabulary, answers only   LoRA: reference 2, KL 1;  the reference, 2
                                                             full: KL 1 (loss "kto")
    grpo     G (its answers)      vocabulary, answers only   the reference, G (beta>0) -

Why each column (what the loop computes, llm/<kind>.py): SFT's and the preference losses' log-probs read the answers'
tokens only, and GPT.forward's target_logits_only / preference_losses.sequence_logps run the vocabulary head there
alone, which on a small model with GPT-2's vocabulary is most of the step (tiny: ~95 % of its FLOPs); a reward model
reads one hidden state per row, through a one-output head; a LoRA run's reference is the same network with the
adapter off, one forward without gradients each step; a full DPO or KTO run computes its reference log-probs once
before training (one forward over every pair), kept with the run; KTO's mismatched answers (its KL reference point)
go forward without gradients. DPO and KTO are watched for degeneration (llm/degeneration.py): at the start and at each
evaluation they sample answers to fixed prompts one token at a time, whose time the probe measures apart (a token's
forward is mostly per-call overhead on a small model).

The sequences' length and the answers' share of it come from the dataset's stats (the GPT-2 token counts an upload
records, `llm.stats.inspect_dataset`): a batch is padded to its longest sequence, not to block_size. Without stats
(pairs from labels or votes, chat thumbs) a sequence is taken as block_size long and all answer, which errs long.

The kind's `estimate.py` calls `fine_tuning_estimate` with its work and defaults; the Train form's preview and the
submit check (`worker.jobs.fit.check_memory`) both read what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.models import Dataset, Model
from db.settings import Settings
from llm.memory import (fsdp_gathered_params, fsdp_shards, gpt_parameter_count, lora_trainable_params,
                        training_memory)
from llm.throughput import ProbeShape
from llm.train_config import FineTuningDefaults, choose_method
from worker.jobs.fit import RunEstimate, device_type
from worker.jobs.params import required
from worker.jobs.throughput import default_dtype

# A reward model's head gives one number per position, not a vocabulary's worth: its logits' memory is a GPT's whose
# head has one output.
SCALAR_HEAD = 1
# Tokens the chat template adds around a message (llm/chat.py): <|im_start|>, the role, a newline, <|im_end|>, a
# newline; the answer's <|im_end|> is scored.
TEMPLATE_TOKENS_PER_MESSAGE = 5
ANSWER_PARTS = {"chat": ("assistant",), "preference": ("chosen", "rejected"), "feedback": ("completion",)}
# The share of positions the head runs at, rounded up to this step: probes are kept per shape, and a few shapes
# cover every dataset (it errs long by less than a step's head share of it).
HEAD_POSITIONS_STEP = 0.05


@dataclass(frozen=True)
class StepWork:
    """What one optimizer micro-step of a fine-tuning kind computes, per example in its batch (the table above)."""

    sequences_per_example: int = 1     # trained: forward and backward (a preference pair is two in one forward)
    vocabulary_head: bool = True       # False: a scalar head at each row's last position (reward models)
    lora_forward_sequences: int = 0    # per example, passed forward without gradients each step by a LoRA run
    full_forward_sequences: int = 0    # the same for a run with all weights
    stored_reference_sequences: int = 0  # a run with all weights: per example, passed forward once before training
    watched: bool = False              # answers sampled at the start and at each evaluation (llm/degeneration.py)

    def forward_sequences(self, full: bool) -> int:
        return self.full_forward_sequences if full else self.lora_forward_sequences


SFT_WORK = StepWork()
REWARD_WORK = StepWork(sequences_per_example=2, vocabulary_head=False)
DPO_WORK = StepWork(sequences_per_example=2, lora_forward_sequences=2, stored_reference_sequences=2, watched=True)


@dataclass(frozen=True)
class Sequences:
    """A step's sequences as the dataset makes them: padded length, and the share of it the head scores."""

    length: int                        # the batch's padded length (its longest sequence, at most block_size)
    head_positions: float              # answer tokens / length, rounded up to HEAD_POSITIONS_STEP
    examples: int | None               # items in the dataset (None: unknown)
    basis: str                         # in words, for the form


def dataset_sequences(stats: dict | None, block_size: int) -> Sequences:
    """The sequences of a chat, preference or feedback dataset from its upload stats; block_size long and all answer
    without them. A sequence is one conversation (chat) or the prompt and one answer (preference, feedback); its
    length is the longest there is (a batch pads to its longest: the dataset's is its upper bound, near it for
    batches of several), the answer's share the mean answer over the padded length, less what truncation cuts."""
    stats = stats or {}
    parts, histograms, items = stats.get("tokens_by_part") or {}, stats.get("token_histograms") or {}, stats.get("items")
    answers = ANSWER_PARTS.get(stats.get("kind"), ())
    if not items or not answers or not all(part in parts and part in histograms for part in answers):
        return Sequences(block_size, 1.0, items, f"{block_size} tokens a sequence, all scored (no dataset stats)")
    prompts = [part for part in histograms if part not in answers]
    if stats["kind"] == "chat":  # one sequence per conversation; about half of its turns are the answers
        turns = (stats.get("turns_histogram") or {}).get("mean", 2)
        longest_turns = (stats.get("turns_histogram") or {}).get("max", turns)
        answer = parts["assistant"] / items + turns / 2
        rendered = sum(parts.values()) / items + TEMPLATE_TOKENS_PER_MESSAGE * turns
        longest = (sum(histograms[part]["max"] for part in histograms)
                   + TEMPLATE_TOKENS_PER_MESSAGE * longest_turns)
    else:  # one sequence per answer, after its prompt (one message each)
        answer = sum(parts[part] for part in answers) / (items * len(answers)) + 1
        rendered = (sum(parts.get(part, 0) for part in prompts) / items + answer - 1
                    + TEMPLATE_TOKENS_PER_MESSAGE * (len(prompts) + 1))
        longest = (sum(histograms[part]["max"] for part in prompts) + max(histograms[part]["max"] for part in answers)
                   + TEMPLATE_TOKENS_PER_MESSAGE * (len(prompts) + 1))
    length = max(1, min(block_size, int(longest) - 1))  # inputs are the rendered ids less the last
    scored = min(answer, max(1.0, length - (rendered - answer)))
    share = min(1.0, math.ceil(scored / length / HEAD_POSITIONS_STEP) * HEAD_POSITIONS_STEP)
    return Sequences(length, round(share, 2), items,
                     f"{length} tokens a sequence (the dataset's longest, at most block_size), "
                     f"{scored:.0f} of them answer tokens on average")


def fine_tuning_estimate(session: Session, params: dict[str, Any], settings: Settings, defaults: FineTuningDefaults,
                         work: StepWork) -> RunEstimate | None:
    """The whole model is held, the adapter (or every weight with the method "full") is trained; sequences are cut
    to the model's context. None for a model row without its shape (made by hand): nothing to estimate from. The
    figures say what the method "auto" stands for on this model and why, and the learning rate the run gets (the
    check stores the same: `worker.jobs.params.resolve_fine_tuning`).

    FLOPs per token: forward 2N and backward 4N (full) or ~2N (LoRA: gradients flow through the frozen weights to
    the adapters, but no weight gradient of the big matrices is computed), 2N for a forward without gradients; the
    memory is a batch of block_size-long sequences (the longest a batch can be)."""
    model_config = session.get(Model, required(params, "model_id")).config or {}
    if not all(isinstance(model_config.get(key), int) for key in ("n_layer", "n_embd", "vocab_size")):
        return None
    n_layer, n_embd, vocab = model_config["n_layer"], model_config["n_embd"], model_config["vocab_size"]
    choice = choose_method(params["method"], model_config)
    full = choice.full
    total = gpt_parameter_count(n_layer, n_embd, vocab, model_config.get("block_size", 0))
    trainable = total if full else lora_trainable_params(model_config, params["lora_r"], params["lora_targets"])
    block = min(params["block_size"], model_config.get("block_size") or params["block_size"])
    dataset = session.get(Dataset, params["dataset_id"]) if params.get("dataset_id") else None
    sequences = dataset_sequences(dataset.stats if dataset is not None else None, block)
    trained = params["batch_size"] * work.sequences_per_example
    forward_only = params["batch_size"] * work.forward_sequences(full)
    head = vocab if work.vocabulary_head else SCALAR_HEAD
    device = device_type(params, settings)
    memory = training_memory(total_params=total, trainable_params=trainable, n_layer=n_layer, n_embd=n_embd,
                             vocab_size=head, batch_size=trained, length=block,
                             device_type=device, dtype=params.get("dtype"), shards=fsdp_shards(params),
                             gathered_params=fsdp_gathered_params(n_embd, vocab, model_config.get("block_size", 0)))
    tokens_per_step = trained * sequences.length * params["grad_accum"]
    forward_tokens = forward_only * sequences.length * params["grad_accum"]
    stored = work.stored_reference_sequences if full else 0
    reference_tokens = stored * (sequences.examples or 0) * sequences.length
    trains_all = full and memory.training > memory.weights
    step_shape = ProbeShape(n_layer, model_config.get("n_head") or 1, n_embd, vocab, trained, sequences.length,
                            default_dtype(device, params.get("dtype")), lora_rank=0 if full else params["lora_r"],
                            head_positions=sequences.head_positions if work.vocabulary_head else 1.0,
                            scalar_head=not work.vocabulary_head, forward_sequences=forward_only)
    steps = params["max_steps"]
    watch_tokens = 0
    if work.watched:  # its fixed prompts, one answer each, at most answer_tokens long (a drifting policy rarely stops)
        from llm.degeneration import DegenerationBounds

        watch_tokens = DegenerationBounds().prompts * DegenerationBounds().answer_tokens
    return RunEstimate(
        memory=memory, device_type=device,
        flops=(((6 if full else 4) * tokens_per_step + 2 * forward_tokens) * steps + 2 * reference_tokens) * total,
        model_field="method" if trains_all else "model_id",
        model_hint=("choose the method lora (a LoRA adapter instead of all weights), or a smaller model" if trains_all
                    else "choose a smaller model"),
        figures={"params_total": total, "trainable_params": trainable, "tokens_per_step": tokens_per_step,
                 "total_tokens": tokens_per_step * steps, "sequences": sequences.basis, "method": choice.method,
                 "method_reason": params.get("method_reason") or choice.reason,
                 "lr": defaults.learning_rate(choice.method, params.get("lr"), n_embd),
                 "lr_given": params.get("lr") is not None},
        shape=step_shape,
        # A full run's reference log-probs, once before training: forward passes over every example, in batches of
        # the step's (each an evaluation batch's time).
        once_forward_batches=reference_tokens / ((trained + forward_only) * sequences.length),
        watch_tokens=watch_tokens)
