"""Preference training that cannot fail silently: what a run is watched by at every evaluation, the bounds that
flag it as degenerating, and the guard that stops it and keeps the last good weights.

DPO can raise its margin by pushing *both* answers' likelihood down until the policy leaves language: held-out
preference accuracy 1.0 and a growing margin while every prompt gets broken words. The margin cannot see that;
these signals can:

  chosen log-probability per token   on the evaluation pairs, against the start (the reference's): the chosen
                                     answers are what the policy should keep saying; falling far below the
                                     start means it is unlearning them
  KL to the reference, per token     on answers the policy samples itself to fixed prompts (seeded, so every
                                     evaluation asks the same prompts with the same randomness)
  collapse of the sampled answers    the same answer to different prompts (`same_answer_share`), or answers
                                     that repeat themselves (distinct-2: distinct token bigrams / bigrams)

The KL estimate: at each position of a sampled answer, the exact KL(policy || reference) of the next-token
distributions, summed over the vocabulary, then averaged over the positions. That is the expectation the k3
estimator (exp(r) - 1 - r, r = log ref - log policy of the one sampled token) estimates from a single token,
computed instead of estimated: never negative, no token-level sampling noise, and it costs one softmax over the
vocabulary per answer token, which is nothing next to sampling the answers. Summed over an answer's positions it
is the KL of whole answers (the chain rule), reported too.

    DegenerationBounds     the bounds, declared once (defaults measured on the tiny model: bench/README.md)
    SampleWatch            the fixed prompts; `measure` samples answers and returns the signals
    problems(...)          what is wrong, in words, against the bounds and the start
    DegenerationGuard      per evaluation: log samples, check, keep the last good weights, ask the loop to stop
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from llm.atomic_files import atomic_write_text
from llm.checkpoint import atomic_save_safetensors
from llm.generate import SamplingSettings, chat_prompt, generate_ids


@dataclass(frozen=True)
class DegenerationBounds:
    """When a preference run counts as degenerating, and how its answers are sampled.

    The defaults come from 26 DPO runs of the tiny preset (all weights and LoRA, learning rates from the default to
    200 times it, RPO's weight 0 to 1) on a task its SFT starts out answering in its format (85 % of 40 sampled
    answers), evaluated every 20 of 200 steps: 260 evaluations, 104 healthy (at least 80 % of the answers still
    in the format) and 107 broken (under 70 %). bench/dpo_degeneration.py measures it; bench/README.md, "DPO
    degeneration", has the figures. Together the two bounds below flag no healthy evaluation and 74 broken ones,
    53 of plain DPO's 54; all but one of the 33 they miss are from runs with RPO, whose answers slip (a word too
    many or too few) while the KL stays low."""

    # Nats per token the chosen answers' log-probability may fall below the start (the reference's). It never fell
    # in a healthy evaluation (at most +0.002 nats); 0.5 leaves room for tasks where DPO lowers the chosen answers
    # somewhat (both rewards often fall) and flags 42 broken evaluations (0.2 would flag 46).
    chosen_logp_drop: float = 0.5
    # KL(policy || reference) of the sampled answers, nats per token. Healthy evaluations: at most 0.19 (0.21 in a
    # rerun of 60-step runs); 0.25 flags none of them and 74 of the broken ones (0.2: 86, 0.3: 64, 0.5: 53).
    kl_per_token: float = 0.25
    # Share of the prompts that got the single most common answer; above it (and above the start's) the answers
    # no longer depend on the prompt. At most 2 of 8 in every evaluation measured, broken or not: this and
    # distinct-2 are for the collapse the issue saw (one answer for every prompt), which the KL flags too.
    same_answer_share: float = 0.5
    # Distinct token bigrams over bigrams in the sampled answers; below it (and below the start's) the answers
    # repeat themselves ("the the the"). Measured: at least 0.92 in healthy evaluations, 0.68 in broken ones.
    distinct_2: float = 0.5
    prompts: int = 8          # fixed prompts sampled at each evaluation
    answer_tokens: int = 32   # at most this many tokens per sampled answer


# --------------------------------------------------------------------------- collapse of the sampled answers

def distinct_2(answers: Sequence[Sequence[int]]) -> float | None:
    """Distinct token bigrams within each answer over all bigrams (answers of fewer than 2 tokens have none);
    None when no answer has a bigram."""
    distinct = total = 0
    for answer in answers:
        bigrams = list(zip(answer, answer[1:]))
        distinct += len(set(bigrams))
        total += len(bigrams)
    return distinct / total if total else None


def same_answer_share(answers: Sequence[Sequence[int]]) -> float | None:
    """Share of the answers equal to the most common one; None with fewer than 2 answers."""
    if len(answers) < 2:
        return None
    return Counter(tuple(answer) for answer in answers).most_common(1)[0][1] / len(answers)


def problems(bounds: DegenerationBounds, now: dict, start: dict) -> list[str]:
    """What is wrong with an evaluation (`now`: the signals of `DegenerationGuard.observe`) against the bounds and
    the start (`start`: the reference's answers); an empty list when nothing is. Collapse counts only when it
    is worse than at the start: a model that already answered alike is not degenerating by doing so still."""
    found = []
    chosen, reference = now.get("chosen_logp_per_token"), now.get("start_chosen_logp_per_token")
    if chosen is not None and reference is not None and reference - chosen > bounds.chosen_logp_drop:
        found.append(f"the chosen answers' log-probability fell {reference - chosen:.2f} nats per token below the "
                     f"start ({reference:.2f} -> {chosen:.2f}; bound {bounds.chosen_logp_drop:g})")
    kl = now.get("kl_per_token")
    if kl is not None and kl > bounds.kl_per_token:
        found.append(f"KL from the start is {kl:.2f} nats per token (budget {bounds.kl_per_token:g})")
    share, start_share = now.get("same_answer_share"), start.get("same_answer_share")
    if share is not None and share > bounds.same_answer_share and share > (start_share or 0.0):
        found.append(f"{share:.0%} of the sampled prompts got the same answer (bound {bounds.same_answer_share:.0%}, "
                     f"{start_share or 0:.0%} at the start)")
    distinct, start_distinct = now.get("distinct_2"), start.get("distinct_2")
    if distinct is not None and distinct < bounds.distinct_2 and distinct < (start_distinct or 1.0):
        found.append(f"the sampled answers repeat themselves: distinct-2 {distinct:.2f} (bound {bounds.distinct_2:g}, "
                     f"{start_distinct if start_distinct is not None else float('nan'):.2f} at the start)")
    return found


# --------------------------------------------------------------------------- sampling and KL

# A model and the context in which it acts as the reference (peft: the adapter switched off).
ReferenceContext = Callable[[], AbstractContextManager[nn.Module]]


def _text(message_list: Sequence[dict]) -> str:
    """What a person reads as the prompt: its last message."""
    return str(message_list[-1].get("content", "")) if message_list else ""


class SampleWatch:
    """Answers to fixed prompts, sampled at temperature 1 with a fixed seed per prompt (the same at every
    evaluation, so two evaluations differ only by the model), and what they show."""

    def __init__(self, tokenizer, prompts: Sequence[Sequence[dict]], bounds: DegenerationBounds, seed: int):
        self.tokenizer, self.bounds, self.seed = tokenizer, bounds, seed
        self.prompts = []
        for messages in prompts[:bounds.prompts]:
            ids, stops = chat_prompt(tokenizer, messages)
            self.prompts.append((_text(messages), ids, stops))

    @torch.no_grad()
    def sample(self, model: nn.Module) -> list[tuple[str, list[int], list[int], bool]]:
        """(prompt text, prompt ids, answer ids without the stop token, whether it stopped) per prompt that leaves
        room for an answer in the model's context."""
        rows = []
        for index, (text, ids, stops) in enumerate(self.prompts):
            room = min(self.bounds.answer_tokens, model.config.block_size - len(ids) - 1)
            if room < 1:
                continue
            settings = SamplingSettings(max_new_tokens=room, temperature=1.0, seed=self.seed + index)
            answer = generate_ids(model, self.tokenizer, ids, settings, stop_ids=stops)[0]
            rows.append((text, ids, answer, len(answer) < room))
        return rows

    @torch.no_grad()
    def next_token_log_probs(self, model: nn.Module, prompt: list[int], answer: list[int], stopped: bool
                             ) -> torch.Tensor:
        """(positions, vocabulary) log-probabilities of the next token at each answer position (and at the position
        after the last token when the answer stopped there: its stop was sampled from it)."""
        ids = torch.tensor([prompt + answer], device=next(model.parameters()).device)
        first, end = len(prompt) - 1, len(prompt) + len(answer) - (0 if stopped else 1)
        hidden = model.hidden_states(ids)[0, first:end]
        # Over what is sampled from: the embedding's padding rows past the tokenizer's vocabulary never are.
        return F.log_softmax(model.lm_head(hidden)[:, :self.tokenizer.vocab_size].float(), dim=-1)

    def measure(self, policy: nn.Module, reference: ReferenceContext | None) -> dict:
        """The signals of the policy's answers: KL to the reference (None without one: the start itself),
        collapse, and the answers as text."""
        rows = self.sample(policy)
        answers = [answer for _, _, answer, _ in rows]
        result = {"distinct_2": distinct_2(answers), "same_answer_share": same_answer_share(answers),
                  "samples": [{"prompt": text, "answer": self.tokenizer.decode(answer)}
                              for text, _, answer, _ in rows]}
        if reference is not None and rows:
            # The policy's distributions first: inside the context the policy may *be* the reference (peft's
            # adapter switched off acts on the very modules the policy runs).
            policy_logps = [self.next_token_log_probs(policy, *row[1:]) for row in rows]
            with reference() as reference_model:
                kl = [(p.exp() * (p - self.next_token_log_probs(reference_model, *row[1:]))).sum(-1).clamp(min=0)
                      for p, row in zip(policy_logps, rows)]
            total = float(sum(per_position.sum() for per_position in kl))
            result["kl_per_token"] = total / max(sum(len(per_position) for per_position in kl), 1)
            result["kl_per_answer"] = total / len(kl)
        return result


# --------------------------------------------------------------------------- the guard

class Degenerated(RuntimeError):
    """The run degenerated before any evaluation passed: there are no good weights to keep."""


LAST_GOOD_FILE = "last_good.safetensors"
SAMPLES_LOGGED = 3  # of each evaluation's answers, in the job's log (all of them are in the report)


def _kept_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as kept:
        return int((kept.metadata() or {})["step"])


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


class DegenerationGuard:
    """Reads every evaluation's signals (`observe`), logs a few sampled answers, flags what `problems` finds with
    `advice` (what to change), and keeps everything in the run's report (`report_path`, JSON: the bounds, the
    start's answers, every evaluation with its answers and problems, the flag). With `stop`, it keeps the
    weights of each evaluation that passed (last_good.safetensors in the run) and asks the loop to stop at the
    first flag (`should_stop`); `restore` then puts the kept weights back.

    A resumed run reads the report back and forgets the evaluations after the checkpoint it resumes from (they
    run again); a run that already stopped on a flag stays stopped (`stopped`)."""

    def __init__(self, out_dir: Path, report_path: Path, bounds: DegenerationBounds, watch: SampleWatch,
                 stop: bool, advice: str, log: Callable[[str], None] = print, resume_step: int | None = None):
        self.out_dir, self.report_path, self.bounds, self.watch = out_dir, report_path, bounds, watch
        self.stop, self.advice, self.log = stop, advice, log
        self.report = {"bounds": asdict(bounds), "stop_on_degeneration": stop, "start": None, "evaluations": [],
                       "flag": None, "kept_step": None}
        if resume_step is None:
            (out_dir / LAST_GOOD_FILE).unlink(missing_ok=True)
            return
        if report_path.is_file():
            stored = json.loads(report_path.read_text())
            if stored.get("flag") and stored["flag"].get("stopped"):
                self.report.update(stored)  # the run stopped on a flag: it does not train again
            else:
                self.report["start"] = stored.get("start")
                kept = [e for e in stored.get("evaluations", []) if e["step"] <= resume_step]
                self.report["evaluations"] = kept
                first = next((e for e in kept if e["problems"]), None)  # a warning given before the checkpoint
                if first is not None:
                    self.report["flag"] = {"step": first["step"], "problems": first["problems"], "stopped": False}
        # The kept weights say their own step: they may be newer than the report (a crash between the two writes)
        # or than the checkpoint resumed from (they passed their evaluation all the same).
        self.report["kept_step"] = _kept_step(out_dir / LAST_GOOD_FILE)

    @property
    def stopped(self) -> bool:
        """A flag stopped this run (now or in an earlier attempt)."""
        return bool(self.report["flag"] and self.report["flag"].get("stopped"))

    def should_stop(self) -> bool:
        return self.stopped

    def observe_start(self, reference: ReferenceContext) -> None:
        """The reference's own answers, once per run: what collapse is compared with, and the "before" samples."""
        if self.report["start"] is None:
            with reference() as reference_model:
                self.report["start"] = self.watch.measure(reference_model, None)

    def observe(self, step: int, signals: dict, model: nn.Module) -> list[str]:
        """One evaluation at `step`: its signals (`SampleWatch.measure`'s, plus chosen/rejected log-probabilities
        per token and the start's chosen one) checked and recorded; returns the problems found."""
        found = problems(self.bounds, signals, self.report["start"] or {})
        self.report["evaluations"].append({"step": step, **signals, "problems": found})
        for sample in signals.get("samples", [])[:SAMPLES_LOGGED]:
            self.log(f"sample at step {step}: {sample['prompt'][:60]!r} -> {sample['answer'][:100]!r}")
        if found:
            action = "stopping" if self.stop else "continuing (stop_on_degeneration is off)"
            self.log(f"WARNING: the policy is degenerating at step {step}: " + "; ".join(found)
                     + f". {self.advice}. {action}")
            if self.stop:
                self.report["flag"] = {"step": step, "problems": found, "stopped": True}
            elif self.report["flag"] is None:
                self.report["flag"] = {"step": step, "problems": found, "stopped": False}
        elif self.stop:
            tensors = {name: param.detach().cpu().contiguous() for name, param in _trainable(model).items()}
            atomic_save_safetensors(tensors, self.out_dir / LAST_GOOD_FILE, metadata={"step": str(step)})
            self.report["kept_step"] = step
        self.save()
        return found

    def restore(self, model: nn.Module) -> int:
        """Put the weights of the last evaluation that passed back into `model`; returns its step."""
        path = self.out_dir / LAST_GOOD_FILE
        flag = self.report["flag"] or {}
        if self.report["kept_step"] is None or not path.is_file():
            raise Degenerated(f"the policy degenerated by its first evaluation (step {flag.get('step')}): "
                              + "; ".join(flag.get("problems", [])) + f". Nothing good to keep. {self.advice}")
        tensors = load_file(str(path), device=str(next(model.parameters()).device))
        missing = set(_trainable(model)) - set(tensors)
        if missing:
            raise ValueError(f"{path} does not hold this model's trainable weights (missing {sorted(missing)[:3]})")
        model.load_state_dict(tensors, strict=False)
        return self.report["kept_step"]

    def save(self, **final) -> None:
        """Write the report (with `final`: the run's closing figures)."""
        self.report.update(final)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.report_path, json.dumps(self.report, indent=1, default=float))

    def summary(self) -> str | None:
        """One line for the job's card and the CLI when something was flagged; None when nothing was."""
        flag = self.report["flag"]
        if not flag:
            return None
        kept = (f"; kept the weights of step {self.report['kept_step']}, the last evaluation that passed"
                if flag.get("stopped") and self.report["kept_step"] is not None else "")
        return (f"degeneration flagged at step {flag['step']}: " + "; ".join(flag["problems"]) + kept
                + f". {self.advice}")

