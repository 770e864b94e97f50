"""Group Relative Policy Optimization (GRPO): the policy practises on prompts; for each prompt it samples G answers,
each answer is scored (a verifier against the prompt's reference answer, a reward model, a length penalty:
llm/verifiers.py), and the policy is pushed toward the answers that scored above their group's mean.

    grpo(policy_model_dir, prompts, out_dir, grpo_config=..., train_config=..., reward_model_dir=None) -> result

One step, on the one training loop (`llm.train.train`; batch_size = prompts per step):
  1. sample   G answers per prompt from the policy: the step's prompts are prefilled together (left-padded) and each
              one's KV cache copied to its G answers; all answers decode together
              (`llm.generate.generate_batch_tokens`); an answer ends at <|im_end|> (kept:
              the model must learn to stop) or at max_completion_length (counted as clipped)
  2. score    reward = verifier_weight x verifier + reward_model_weight x reward model - length penalty
              - missing_eos_penalty for an answer cut at the length limit (TRL's name)
  3. advantage  A = (r - mean of the group's r) / (std of the group's r + 1e-4); scale_rewards "batch" divides by
              the batch's std, "none" not at all (TRL's scale_rewards; std with Bessel's correction, as TRL's)
  4. loss     per answer token t: ratio = pi(t) / pi_old(t) (1 at the sampling policy: one update per batch, TRL's
              num_iterations=1, so only the gradient of -A log pi remains), clipped to [1 - eps, 1 + eps_high]:
              l_t = -min(ratio A, clip(ratio) A) + beta KL_t, KL_t = exp(ref - pi) - (ref - pi) - 1 (k3, per token,
              in log-probs at the sampling temperature), aggregated per `loss_type` (`AGGREGATIONS`, TRL's formulas)

The KL reference, by method ("auto" is resolved first: `llm.train_config.choose_method`): LoRA, the same network
with the adapter switched off; full, a frozen copy of the starting weights (no gradients, no optimizer state). With
beta 0 (TRL's default) the loss has no KL term, and the KL is measured at each evaluation only.

Each evaluation samples G answers to fixed held-out prompts with a fixed seed: reward, pass rate (the verifier's),
the share of groups whose answers all scored the same (they teach nothing), the KL per token and answer lengths,
and a table of the answers with their rewards, in the log and in the run's report (grpo_report.json).
The metric names are TRL's: reward, reward_std, frac_reward_zero_std, rewards/<part>/mean, kl,
completions/mean_length, completions/clipped_ratio, clip_ratio/region_mean.
The output is what SFT writes (an adapter of the policy, or a full model), chat-ready.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from llm.atomic_files import atomic_write_text
from llm.chat import end_of_turn_id
from llm.chat_batches import IGNORE_INDEX, ConversationBatches
from llm.checkpoint import load_weights, read_config
from llm.device import pick_device
from llm.generate import SamplingSettings, _undecodable_ids, chat_prompt, generate_batch_tokens
from llm.grpo_config import GRPOConfig, grpo_train_config, resolved_beta
from llm.grpo_data import read_prompt_records
from llm.lora import adapters_merged, trainable_parameter_count
from llm.model import target_log_probs
from llm.sft import chat_base, inherited_config, training_flops_per_token
from llm.sft_config import run_settings
from llm.train import TrainConfig, checkpoint_step, train
from llm.tuned_policy import start_policy
from llm.verifiers import Verifier, length_penalty

REPORT_FILE = "grpo_report.json"
STD_EPSILON = 1e-4  # TRL's: added to the std the advantages are divided by
SAMPLES_LOGGED = 6  # rows of each evaluation's answers table in the log (the report keeps them all)


# ----------------------------------------------------------------------------- the loss, as a function of tensors

def group_advantages(rewards: torch.Tensor, group: int, scale_rewards: str = "group"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, whether each answer's group scored all the same) of (N,) rewards, N = prompts x `group`,
    each prompt's answers next to each other."""
    grouped = rewards.view(-1, group)
    mean = grouped.mean(dim=1).repeat_interleave(group)
    group_std = grouped.std(dim=1).repeat_interleave(group)  # Bessel's correction, as TRL's nanstd
    std = rewards.std().expand_as(rewards) if scale_rewards == "batch" else group_std
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + STD_EPSILON)
    return advantages, torch.isclose(std, torch.zeros_like(std))


def _per_answer(per_token: torch.Tensor, mask: torch.Tensor, max_length: int) -> torch.Tensor:
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _over_tokens(per_token: torch.Tensor, mask: torch.Tensor, max_length: int) -> torch.Tensor:
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _over_length_limit(per_token: torch.Tensor, mask: torch.Tensor, max_length: int) -> torch.Tensor:
    return (per_token * mask).sum() / (per_token.size(0) * max_length)


# How each loss type turns (answers, tokens) losses into one number, declared once (TRL 1.x GRPOTrainer). dapo and
# bnpo agree here: TRL's dapo divides by the tokens of the whole generation batch, which is one micro-batch here
# (each micro-batch samples its own answers).
AGGREGATIONS = {"grpo": _per_answer, "bnpo": _over_tokens, "dapo": _over_tokens, "dr_grpo": _over_length_limit}


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, reference_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, config: GRPOConfig) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss on (N, T) per-token log-probs of the answers (mask: 1 on answer tokens),
    with `config`'s beta, epsilon(s), loss type and max_completion_length; metrics under TRL's names."""
    mask = mask.to(logps.dtype)
    advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    high = config.epsilon_high if config.epsilon_high is not None else config.epsilon
    clipped = torch.clamp(ratio, 1 - config.epsilon, 1 + high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    metrics = {}
    if config.beta:  # 0 (or unresolved): no KL term
        difference = reference_logps - logps
        kl = torch.exp(difference) - difference - 1
        per_token = per_token + config.beta * kl
        metrics["kl"] = ((kl * mask).sum() / mask.sum().clamp(min=1.0)).detach()
    loss = AGGREGATIONS[config.loss_type](per_token, mask, config.max_completion_length)
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1.0)
        low_clipped = ((ratio < 1 - config.epsilon) & (advantages < 0)).to(mask.dtype)
        high_clipped = ((ratio > 1 + high) & (advantages > 0)).to(mask.dtype)
        metrics["clip_ratio/low_mean"] = (low_clipped * mask).sum() / tokens
        metrics["clip_ratio/high_mean"] = (high_clipped * mask).sum() / tokens
        metrics["clip_ratio/region_mean"] = ((low_clipped + high_clipped) * mask).sum() / tokens
    return loss, metrics


def answer_logps(model: nn.Module, rows: Sequence[Sequence[int]], prompt_lengths: Sequence[int], pad_id: int,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) log-probabilities (at `temperature`) of each row's answer tokens (row = prompt ids + answer ids, the
    answer starting at prompt_lengths[i]) and their (N, T) mask; T is the longest answer. One forward over the
    right-padded rows; the head runs only at answer positions (as DPO's `sequence_logps`)."""
    device = next(model.parameters()).device
    width = max(len(row) for row in rows) - 1
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for index, (row, start) in enumerate(zip(rows, prompt_lengths)):
        inputs[index, :len(row) - 1] = torch.tensor(row[:-1])
        targets[index, start - 1:len(row) - 1] = torch.tensor(row[start:])
    inputs, targets = inputs.to(device), targets.to(device)
    hidden = model.hidden_states(inputs)
    flat_targets = targets.reshape(-1)
    positions = (flat_targets != IGNORE_INDEX).nonzero().squeeze(1)
    logits = model.lm_head(hidden.reshape(-1, hidden.size(-1)).index_select(0, positions))
    if temperature != 1.0:
        logits = logits / temperature
    token_logps = target_log_probs(logits, flat_targets.index_select(0, positions))
    row_of = positions // width
    starts = torch.tensor(prompt_lengths, device=device) - 1
    column = positions % width - starts[row_of]
    answer_width = int(max(len(row) - start for row, start in zip(rows, prompt_lengths)))
    logps = torch.zeros(len(rows), answer_width, dtype=token_logps.dtype, device=device)
    logps = logps.index_put((row_of, column), token_logps)
    mask = torch.zeros(len(rows), answer_width, dtype=torch.bool, device=device)
    mask[row_of, column] = True
    return logps, mask


# ----------------------------------------------------------------------------- prompts, answers, rewards

@dataclass(frozen=True)
class PromptExample:
    messages: list
    ids: list[int]              # the prompt rendered for completion (ends with <|im_start|>assistant\n)
    answer: str | None          # the reference answer, for the verifier


@dataclass
class Answer:
    ids: list[int]              # sampled tokens, the stop token included when one ended it
    text: str                   # decoded, without the stop token
    clipped: bool               # cut by max_completion_length


class PromptBatches(ConversationBatches):
    """Endless, seeded, resumable batches of `batch_size` prompts (ConversationBatches' order and state), each with
    the seed its answers are sampled with: a function of the data position, so a resumed run samples the same."""

    def __init__(self, examples: list[PromptExample], batch_size: int, seed: int):
        if not examples:
            raise ValueError("no prompts to practise on")
        super().__init__(examples, batch_size, seed, pad_id=0, collate=lambda picked, pad: {"examples": picked})

    def next_batch(self) -> dict:
        epoch, position = self.epoch, self.position
        batch = super().next_batch()
        batch["seed"] = (self.seed * 1_000_003 + epoch * 100_003 + position) % 2 ** 62
        return batch


class Rewards:
    """The reward of an answer: verifier_weight x verifier (0 or 1) + reward_model_weight x the reward model's score
    - the length penalty - missing_eos_penalty if it was cut at the length limit before ending its turn (a reward
    model scores the text as if it had ended). `score` gives the totals and each part by name (TRL's
    rewards/<name>/mean)."""

    def __init__(self, config: GRPOConfig, tokenizer, reward_model: nn.Module | None = None):
        self.config, self.tokenizer, self.reward_model = config, tokenizer, reward_model
        self.verifier = Verifier(config.verifier, config.pattern, config.tolerance, config.json_keys)
        self.length_active = config.length_target > 0 and config.length_penalty > 0
        self.unfinished_active = config.missing_eos_penalty > 0
        if not self.verifier.active and reward_model is None:
            raise ValueError("verifier: choose a verifier or a reward model: GRPO needs something to score answers")

    @property
    def names(self) -> list[str]:
        return ([self.config.verifier] if self.verifier.active else []) + (
            ["reward_model"] if self.reward_model is not None else []) + (["length"] if self.length_active else []) + (
            ["missing_eos"] if self.unfinished_active else [])

    def score(self, messages: list, reference: str | None, answers: Sequence[Answer]) -> tuple[list[float], dict]:
        parts: dict[str, list[float]] = {}
        totals = [0.0] * len(answers)
        if self.verifier.active:
            parts[self.config.verifier] = [self.verifier.score(a.text, reference) for a in answers]
            totals = [t + self.config.verifier_weight * s for t, s in zip(totals, parts[self.config.verifier])]
        if self.reward_model is not None:
            from llm.best_of_n import score_answers

            parts["reward_model"] = score_answers(self.reward_model, self.tokenizer, messages, [a.text for a in answers])
            totals = [t + self.config.reward_model_weight * s for t, s in zip(totals, parts["reward_model"])]
        if self.length_active:
            parts["length"] = [-length_penalty(len(a.ids), self.config.length_target, self.config.length_penalty)
                               for a in answers]
            totals = [t + s for t, s in zip(totals, parts["length"])]
        if self.unfinished_active:
            parts["missing_eos"] = [-self.config.missing_eos_penalty * a.clipped for a in answers]
            totals = [t + s for t, s in zip(totals, parts["missing_eos"])]
        return totals, parts


def sample_answers(model: nn.Module, tokenizer, example: PromptExample, count: int, config: GRPOConfig, seed: int,
                   stops: set[int], banned: list[int]) -> list[Answer]:
    """`count` answers to one prompt sharing one prefill (llm/generate.py), sampled at the config's temperature."""
    return sample_groups(model, tokenizer, [example], count, config, [seed], stops, banned)[0]


def sample_groups(model: nn.Module, tokenizer, examples: Sequence[PromptExample], count: int, config: GRPOConfig,
                  seeds: Sequence[int], stops: set[int], banned: list[int]) -> list[list[Answer]]:
    """`count` answers to each prompt, all sampled together (`llm.generate.generate_batch_tokens`: one left-padded
    prefill of the prompts, each prompt's cache copied to its answers, one forward per token for all answers);
    prompt p's answers draw from the generators seeded `seeds[p]`, so they are what it sampled alone would give."""
    settings = SamplingSettings(max_new_tokens=config.max_completion_length, temperature=config.temperature,
                                stop_at_end_of_text=False)
    total = len(examples) * count
    rows: list[list[int]] = [[] for _ in range(total)]
    done = [False] * total
    for step in generate_batch_tokens(model, [example.ids for example in examples], list(seeds), settings, count,
                                      stops, tokenizer.vocab_size, banned):
        for index, token in enumerate(step.tolist()):
            if not done[index] and token >= 0:
                rows[index].append(token)
                done[index] = token in stops
    answers = [Answer(row, tokenizer.decode([t for t in row if t not in stops]), not finished)
               for row, finished in zip(rows, done)]
    return [answers[start:start + count] for start in range(0, total, count)]


def _spread(values: Sequence[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).std()) if len(values) > 1 else 0.0


class GRPOObjective:
    """Each batch: sample, score, advantages, the clipped loss (`grpo_loss`); `evaluate` samples the fixed
    evaluation prompts. `policy_of(model)` is the network that samples (the GPT inside a peft model), `reference()`
    a context giving the KL reference."""

    watch_learning = False  # a policy-gradient loss is not a descending curve: the reward is what shows learning

    def __init__(self, config: GRPOConfig, tokenizer, rewards: Rewards, eval_examples: Sequence[PromptExample],
                 seed: int, policy_of: Callable[[nn.Module], nn.Module], reference):
        self.config, self.tokenizer, self.rewards = config, tokenizer, rewards
        self.eval_examples, self.seed = list(eval_examples), seed
        self.policy_of, self.reference = policy_of, reference
        self.stops = {end_of_turn_id(tokenizer), *chat_prompt(tokenizer, [{"role": "user", "content": "x"}])[1],
                      tokenizer.eot_id}
        self.banned = _undecodable_ids(tokenizer)
        self.last_samples: list[dict] = []

    def _rollout(self, model: nn.Module, examples: Sequence[PromptExample], seed: int):
        """Answers, rewards and parts of a batch of prompts, G answers each, in prompt order."""
        policy = self.policy_of(model)
        group = self.config.num_generations
        answers, rewards, parts = [], [], {name: [] for name in self.rewards.names}
        with adapters_merged(policy):  # LoRA: sample through merged weights, one matmul per layer
            groups = sample_groups(policy, self.tokenizer, examples, group, self.config,
                                   [seed * 1009 + index for index in range(len(examples))], self.stops, self.banned)
        for example, group_answers in zip(examples, groups):
            totals, by_part = self.rewards.score(example.messages, example.answer, group_answers)
            answers += group_answers
            rewards += totals
            for name, values in by_part.items():
                parts[name] += values
        return answers, rewards, parts

    def _logps(self, model: nn.Module, examples: Sequence[PromptExample], answers: Sequence[Answer]):
        group = self.config.num_generations
        rows = [examples[i // group].ids + answer.ids for i, answer in enumerate(answers)]
        starts = [len(examples[i // group].ids) for i in range(len(answers))]
        return rows, starts

    def _reference_logps(self, model: nn.Module, rows, starts) -> torch.Tensor:
        with torch.no_grad(), self.reference() as reference_model:
            return answer_logps(reference_model, rows, starts, self.tokenizer.eot_id, self.config.temperature)[0]

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        examples = batch["examples"]
        answers, rewards, parts = self._rollout(model, examples, batch["seed"])
        device = next(model.parameters()).device
        reward_tensor = torch.tensor(rewards, dtype=torch.float32, device=device)
        advantages, same = group_advantages(reward_tensor, self.config.num_generations, self.config.scale_rewards)
        rows, starts = self._logps(model, examples, answers)
        logps, mask = answer_logps(model, rows, starts, self.tokenizer.eot_id, self.config.temperature)
        reference = self._reference_logps(model, rows, starts) if self.config.beta else None
        loss, metrics = grpo_loss(logps, logps.detach(), reference, advantages, mask, self.config)
        lengths = [len(answer.ids) for answer in answers]
        batch["tokens"] = sum(len(row) for row in rows)
        metrics.update({"reward": reward_tensor.mean(), "reward_std": reward_tensor.std(),
                        "frac_reward_zero_std": same.float().mean(),
                        "completions/mean_length": sum(lengths) / len(lengths),
                        "completions/min_length": min(lengths), "completions/max_length": max(lengths),
                        "completions/clipped_ratio": sum(a.clipped for a in answers) / len(answers)})
        for name, values in parts.items():
            metrics[f"rewards/{name}/mean"] = sum(values) / len(values)
            metrics[f"rewards/{name}/std"] = _spread(values)
        return loss, metrics

    def tokens_in(self, batch: dict) -> int:
        return batch["tokens"]

    def evaluate(self, model: nn.Module) -> dict:
        """G answers to each evaluation prompt (seeded: every evaluation draws the same randomness): val_reward,
        val_pass_rate (the verifier's), val_frac_reward_zero_std, val_kl (per token, k3, to the reference),
        val_completions/mean_length; the answers with their rewards kept in `last_samples`."""
        answers, rewards, parts = self._rollout(model, self.eval_examples, self.seed)
        group = self.config.num_generations
        reward_tensor = torch.tensor(rewards, dtype=torch.float64)
        _, same = group_advantages(reward_tensor, group, "group")
        result = {"val_reward": float(reward_tensor.mean()), "val_reward_std": float(reward_tensor.std()),
                  "val_frac_reward_zero_std": float(same.double().mean()),
                  "val_completions/mean_length": sum(len(a.ids) for a in answers) / len(answers),
                  "val_completions/clipped_ratio": sum(a.clipped for a in answers) / len(answers)}
        if self.rewards.verifier.active:
            scores = parts[self.config.verifier]
            result["val_pass_rate"] = sum(score >= 1.0 for score in scores) / len(scores)
        rows, starts = self._logps(model, self.eval_examples, answers)
        logps, mask = answer_logps(model, rows, starts, self.tokenizer.eot_id, self.config.temperature)
        difference = self._reference_logps(model, rows, starts) - logps
        kl = torch.exp(difference) - difference - 1
        result["val_kl"] = float((kl * mask).sum() / mask.sum().clamp(min=1))
        self.last_samples = [
            {"prompt": str(self.eval_examples[i // group].messages[-1]["content"]), "answer": answer.text,
             "reward": reward, **{name: values[i] for name, values in parts.items()}}
            for i, (answer, reward) in enumerate(zip(answers, rewards))]
        return result


# ----------------------------------------------------------------------------- the run

def samples_table(samples: Sequence[dict], rows: int = SAMPLES_LOGGED) -> str:
    """The first answer of each of the first `rows` prompts with its reward, as lines of text for the log."""
    firsts, seen = [], set()
    for sample in samples:
        if sample["prompt"] not in seen and len(firsts) < rows:
            seen.add(sample["prompt"])
            firsts.append(sample)
    return "\n".join(f"  reward {s['reward']:+.3f} | {s['prompt'][:50]!r} -> {s['answer'][:80]!r}" for s in firsts)


def prompt_examples(tokenizer, records: Sequence[dict], max_prompt_tokens: int) -> tuple[list[PromptExample], int]:
    """The records rendered for completion, those whose prompt leaves no room for an answer dropped (counted)."""
    examples, dropped = [], 0
    for record in records:
        ids, _ = chat_prompt(tokenizer, record["prompt"])
        if len(ids) > max_prompt_tokens:
            dropped += 1
            continue
        examples.append(PromptExample(record["prompt"], ids, record["answer"]))
    return examples, dropped


def _split(examples: list[PromptExample], fraction: float, seed: int) -> tuple[list, list]:
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    held = int(len(examples) * fraction) if len(examples) > 1 else 0
    return [examples[i] for i in order[held:]], [examples[i] for i in order[:held]]


def check_reward_model(policy_model_dir: str | os.PathLike, reward_model_dir: str | os.PathLike) -> None:
    """A reward model can score the policy's answers only if both read the same tokens."""
    policy, reward = read_config(policy_model_dir).get("tokenizer"), read_config(reward_model_dir).get("tokenizer")
    if policy != reward:
        raise ValueError(f"reward_model: its tokenizer ({reward}) is not the policy's ({policy}); it would score "
                         "other tokens than the policy writes")


def grpo(policy_model_dir: str | os.PathLike, data: str | os.PathLike | list, out_dir: str | os.PathLike, *,
         grpo_config: GRPOConfig | None = None, train_config: TrainConfig | None = None,
         reward_model_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
         on_metrics: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
         resume: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train the model in `policy_model_dir` with GRPO on prompts (records {"prompt" or "messages", "answer"} or a
    prompts dataset file) scored by the config's verifier and/or the reward model in `reward_model_dir`.

    Returns {"stopped", "step", "loss", "val_reward", "val_pass_rate", "val_kl", "prompts", "dropped",
    "train_prompts", "val_prompts", "held_out", "trainable_params", "total_params", "model_dir" (None when stopped),
    "architecture", "samples" (the last evaluation's answers with their rewards)}.
    """
    grpo_config = grpo_config or GRPOConfig()
    grpo_config = replace(grpo_config, beta=resolved_beta(grpo_config.beta, reward_model_dir is not None))
    policy_model_dir, out_dir = Path(policy_model_dir), Path(out_dir)
    base_config, tokenizer_name, tokenizer = chat_base(policy_model_dir, out_dir, data_dir)
    grpo_config, config = run_settings(grpo_config, train_config, base_config["model"], grpo_train_config, log)
    records = read_prompt_records(data, grpo_config.verifier)
    max_length = min(config.block_size, base_config["model"]["block_size"])
    if grpo_config.max_completion_length >= max_length:
        raise ValueError(f"max_completion_length: {grpo_config.max_completion_length} leaves no room for a prompt in "
                         f"{max_length} tokens (block_size and the model's context)")
    examples, dropped = prompt_examples(tokenizer, records, max_length - grpo_config.max_completion_length)
    train_examples, val_examples = _split(examples, grpo_config.val_fraction, config.seed)
    log(f"{len(records):,} prompts: {dropped:,} dropped (longer than {max_length - grpo_config.max_completion_length}"
        f" tokens), {len(train_examples):,} to practise on, {len(val_examples):,} held out")
    if not train_examples:
        raise ValueError("no prompt leaves room for an answer; raise block_size or lower max_completion_length")
    reward_model = None
    if reward_model_dir is not None:
        from llm.reward import load_reward_model

        check_reward_model(policy_model_dir, reward_model_dir)
        # On the device the loop will train on: it scores the answers the policy samples there.
        reward_model = load_reward_model(reward_model_dir, pick_device(config.device)).requires_grad_(False)
    rewards = Rewards(grpo_config, tokenizer, reward_model)

    model: nn.Module = load_weights(policy_model_dir)
    answer_share = grpo_config.max_completion_length / max_length
    flops_per_token = training_flops_per_token(model, max_length, grpo_config.full, answered_share=answer_share)
    torch.manual_seed(config.seed)
    # The KL reference: a frozen copy of the start (all weights) or the adapter switched off (LoRA), as DPO's.
    policy = start_policy(model, policy_model_dir, grpo_config, tokenizer_name,
                          extra={**inherited_config(policy_model_dir), "chat": True, "grpo": asdict(grpo_config)})
    model = policy.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count, total_count = trainable_parameter_count(model)
    log(f"{'full' if grpo_config.full else f'LoRA r={grpo_config.lora_r} on {grpo_config.lora_targets}'} GRPO "
        f"({grpo_config.loss_type}, G {grpo_config.num_generations}, beta {grpo_config.beta:g}, rewards: "
        f"{', '.join(rewards.names)}): {trainable_count:,} trainable parameters of {total_count:,}")

    held_out = bool(val_examples)
    eval_examples = (val_examples or train_examples)[:grpo_config.eval_prompts]
    if not held_out:
        log("no prompts held out: evaluations answer training prompts")
    objective = GRPOObjective(grpo_config, tokenizer, rewards, eval_examples, config.seed, policy.policy_of,
                              policy.reference)

    # The report: every evaluation's figures and answers table; a resumed run keeps those before its checkpoint.
    report_path = out_dir / REPORT_FILE
    resume_step = checkpoint_step(out_dir) if resume else 0
    evaluations = []
    if resume_step and report_path.is_file():
        evaluations = [e for e in json.loads(report_path.read_text()).get("evaluations", []) if e["step"] <= resume_step]

    def on_record(record: dict) -> None:
        if objective.last_samples and "val_reward" in record:
            evaluations.append({"step": record["step"], **{k: v for k, v in record.items() if k.startswith("val_")},
                                "samples": objective.last_samples})
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(report_path, json.dumps({"held_out": held_out, "evaluations": evaluations}))
            log(f"answers at step {record['step']} (reward, prompt -> answer):\n{samples_table(objective.last_samples)}")
            objective.last_samples = []
        if on_metrics is not None:
            on_metrics(record)

    batches = PromptBatches(train_examples, config.batch_size, config.seed)
    result = train(model, objective, batches, config, out_dir, on_metrics=on_record, should_stop=should_stop,
                   trainable_params=trainable, flops_per_token=flops_per_token, save_model_fn=policy.save, resume=resume,
                   log=log)
    if result["stopped"]:
        return {"stopped": True, "step": result["step"], "loss": result["loss"], "model_dir": None,
                "architecture": policy.architecture}
    final = evaluations[-1] if evaluations else {}
    return {"stopped": False, "step": result["step"], "loss": result["loss"], "val_reward": final.get("val_reward"),
            "val_pass_rate": final.get("val_pass_rate"), "val_kl": final.get("val_kl"), "prompts": len(records),
            "dropped": dropped, "train_prompts": len(train_examples), "val_prompts": len(val_examples),
            "held_out": held_out, "trainable_params": trainable_count, "total_params": total_count,
            "model_dir": str(out_dir), "architecture": policy.architecture, "samples": final.get("samples")}
