"""The losses of learning from preferences, as plain functions of scores: the reward model's Bradley–Terry
loss and DPO's sigmoid / IPO / hinge losses, with the metrics TRL logs under the same names.

    reward_loss(chosen_rewards, rejected_rewards, margin, center_coefficient) -> (loss, metrics)
    sequence_logps(model, inputs, targets)                                   -> (2B,) summed answer log-probs
    dpo_loss(policy_logps, reference_logps, answer_tokens, beta, loss_type)  -> (loss, metrics)
    chosen_nll(policy_logps, answer_tokens)                                  -> RPO's NLL term

Batches put the B chosen rows first and the B rejected rows after them (`llm/preference_batches.py`).
Formulas (as in TRL 1.x, which tests/llm/test_preference_losses.py and the trainers' parity tests check):

  reward   -logsigmoid(r_c - r_r - margin), + c * mean((r_c + r_r)^2) with reward centering
  DPO      h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)), summed over answer tokens
           sigmoid: -logsigmoid(beta h)   hinge: relu(1 - beta h)
           ipo: (h' - 1 / (2 beta))^2 with h' the same difference of *per-token averaged* log ratios
  rewards/chosen = beta (log pi(y_c) - log ref(y_c)); the margin and accuracy compare those of y_c and y_r.
  logps/chosen is TRL's: the mean over pairs of the summed answer log-probs; logps/chosen_per_token (ours) is
           their sum over the batch's chosen tokens divided by those tokens, so answers of any length compare
  RPO      + alpha * chosen_nll: the chosen answers' negative log-likelihood per token over the batch's chosen
           tokens (TRL 1.x: loss_type ["sigmoid", "sft"] with loss_weights [1, alpha]; TRL 0.x: rpo_alpha)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.chat_batches import IGNORE_INDEX
from llm.dpo_config import DPO_LOSSES
from llm.model import target_log_probs

# Logits per block of tokens when the head runs without gradients: 32 MB (~160 tokens of a 50k
# vocabulary), enough rows for the matmul to run at full speed.
_NO_GRAD_HEAD_BYTES = 32 << 20


def reward_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None,
                center_coefficient: float | None = None) -> tuple[torch.Tensor, dict]:
    """Bradley–Terry: the chosen answer should score higher (by `margin`, when the data gives one)."""
    difference = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(difference - margin if margin is not None else difference).mean()
    if center_coefficient:
        loss = loss + center_coefficient * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    with torch.no_grad():
        both = torch.cat([chosen_rewards, rejected_rewards]).float()
        metrics = {"accuracy": (difference > 0).float().mean(), "margin": difference.float().mean(),
                   "min_reward": both.min(), "mean_reward": both.mean(), "max_reward": both.max()}
    return loss, metrics


def sequence_logps(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's targets, targets per row) for a GPT (or a peft model around one).

    The head runs only at positions with a target, like SFT's forward: a (T, vocab) head on the prompt and
    padding would be most of the work and all of it wasted. The log-probs come from `target_log_probs`, which
    keeps the (answer tokens, vocab) logits alone for the backward pass; without gradients (the reference
    pass) the head itself runs a block of tokens at a time, so those logits never exist whole.
    """
    hidden = model.hidden_states(inputs)
    flat_targets = targets.reshape(-1)
    rows = (flat_targets != IGNORE_INDEX).nonzero().squeeze(1)
    answer_hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, rows)
    answer_targets = flat_targets.index_select(0, rows)
    if torch.is_grad_enabled():
        token_logps = target_log_probs(model.lm_head(answer_hidden), answer_targets)
    else:
        block = max(1, _NO_GRAD_HEAD_BYTES // (4 * model.lm_head.weight.size(0)))
        token_logps = torch.cat([target_log_probs(model.lm_head(answer_hidden[i:i + block]),
                                                  answer_targets[i:i + block])
                                 for i in range(0, answer_hidden.size(0), block)])
    row_of_token = rows // targets.size(1)
    sums = torch.zeros(targets.size(0), dtype=token_logps.dtype, device=token_logps.device)
    sums = sums.index_add(0, row_of_token, token_logps)
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return sums, counts


def dpo_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, answer_tokens: torch.Tensor,
             beta: float = 0.1, loss_type: str = "sigmoid") -> tuple[torch.Tensor, dict]:
    """DPO on (2B,) summed answer log-probs of the policy and the reference, chosen rows first."""
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, got {loss_type!r}")
    chosen_logps, rejected_logps = policy_logps.chunk(2)
    reference_chosen, reference_rejected = reference_logps.chunk(2)
    chosen_ratio, rejected_ratio = chosen_logps - reference_chosen, rejected_logps - reference_rejected
    difference = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * difference)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * difference)
    else:  # ipo: per-token averages, so beta means the same for short and long answers (TRL, the IPO authors)
        chosen_tokens, rejected_tokens = answer_tokens.chunk(2)
        averaged = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (averaged - 1 / (2 * beta)) ** 2
    with torch.no_grad():
        chosen_rewards, rejected_rewards = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
        metrics = {"rewards/chosen": chosen_rewards.mean(), "rewards/rejected": rejected_rewards.mean(),
                   "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
                   "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
                   "logps/chosen": chosen_logps.detach().mean(), "logps/rejected": rejected_logps.detach().mean()}
        for name, logps, tokens in zip(("chosen", "rejected"), (chosen_logps, rejected_logps), answer_tokens.chunk(2)):
            metrics[f"logps/{name}_per_token"] = logps.detach().sum() / tokens.sum().clamp(min=1)
    return losses.mean(), metrics


def chosen_nll(policy_logps: torch.Tensor, answer_tokens: torch.Tensor) -> torch.Tensor:
    """The chosen answers' negative log-likelihood per token, over all chosen tokens of the batch (TRL's "sft"
    loss, which RPO adds to DPO's): it keeps what the policy should say likely while the margin grows."""
    chosen_logps, chosen_tokens = policy_logps.chunk(2)[0], answer_tokens.chunk(2)[0]
    return -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)
