"""The degeneration watch (llm/degeneration.py) in its parts: the collapse measures, the problems it names, the KL
of sampled answers (exact, never negative, KL(policy || reference) and not the reverse, and the adapter switched off
for the reference never leaking into the policy), and the guard that keeps the last good weights across a resume.
DPO runs that degenerate, stop and stay coherent are in tests/llm/test_dpo_degeneration.py."""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager, nullcontext

import pytest
import torch
import torch.nn as nn

from llm.degeneration import (LAST_GOOD_FILE, DegenerationBounds, DegenerationGuard, Degenerated, SampleWatch,
                              distinct_2, problems, same_answer_share)
from llm.model import GPT, config_from_preset
from llm.tokenizer import get_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [[{"role": "user", "content": f"Say something about {thing}."}] for thing in ("cats", "rain", "tea")]


def test_collapse_is_measured_within_answers_and_across_prompts():
    assert distinct_2([[1, 2, 3, 4], [5, 6]]) == 1.0
    assert distinct_2([[7, 7, 7, 7, 7]]) == 0.25          # four bigrams, all (7, 7)
    assert distinct_2([[1], []]) is None                   # no answer has a bigram
    assert same_answer_share([[1, 2], [1, 2], [3], [1, 2]]) == 0.75
    assert same_answer_share([[1, 2]]) is None             # one prompt says nothing about prompts


def test_each_signal_is_named_against_its_bound_and_collapse_only_when_worse_than_the_start():
    bounds = DegenerationBounds(chosen_logp_drop=0.5, kl_per_token=0.3, same_answer_share=0.5, distinct_2=0.5)
    healthy = {"chosen_logp_per_token": -1.1, "start_chosen_logp_per_token": -1.0, "kl_per_token": 0.1,
               "same_answer_share": 0.25, "distinct_2": 0.9}
    assert problems(bounds, healthy, {"same_answer_share": 0.125, "distinct_2": 0.95}) == []
    broken = {"chosen_logp_per_token": -2.0, "start_chosen_logp_per_token": -1.0, "kl_per_token": 0.8,
              "same_answer_share": 0.75, "distinct_2": 0.3}
    found = problems(bounds, broken, {"same_answer_share": 0.125, "distinct_2": 0.95})
    assert len(found) == 4
    assert "fell 1.00 nats per token" in found[0] and "0.80 nats per token (budget 0.3)" in found[1]
    assert "75% of the sampled prompts got the same answer" in found[2] and "distinct-2 0.30" in found[3]
    # A model that answered every prompt alike from the start is not collapsing by still doing so.
    assert len(problems(bounds, broken, {"same_answer_share": 1.0, "distinct_2": 0.2})) == 2


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def gpt(tokenizer):
    torch.manual_seed(0)
    return GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)).eval()


def test_the_switched_off_adapter_gives_the_reference_and_never_leaks_into_the_policy(gpt, tokenizer):
    from llm.dpo_config import DPOConfig
    from llm.lora import apply_lora

    reference = copy.deepcopy(gpt)
    torch.manual_seed(1)
    peft_model = apply_lora(copy.deepcopy(gpt), DPOConfig(lora_r=4, lora_dropout=0.0))
    with torch.no_grad():  # a trained adapter: the policy differs from the reference
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    peft_model.eval()
    policy = peft_model.get_base_model()

    @contextmanager
    def adapter_off():  # as llm/dpo.py's LoRA reference
        with peft_model.disable_adapter():
            yield policy

    # A prompt too long for the context is skipped; the others keep their own prompt text.
    too_long = [{"role": "user", "content": "word " * 80}]
    watch = SampleWatch(tokenizer, [PROMPTS[0], too_long, *PROMPTS[1:]], DegenerationBounds(answer_tokens=12), seed=3)
    through_peft = watch.measure(policy, adapter_off)
    assert [sample["prompt"] for sample in through_peft["samples"]] == [p[0]["content"] for p in PROMPTS]
    with_a_copy = watch.measure(policy, lambda: nullcontext(reference))
    assert through_peft["samples"] == with_a_copy["samples"]  # same seeds, same policy: the same answers
    assert through_peft["kl_per_token"] > 0.01
    assert through_peft["kl_per_token"] == pytest.approx(with_a_copy["kl_per_token"], rel=1e-4)
    assert with_a_copy["kl_per_answer"] >= with_a_copy["kl_per_token"]
    assert watch.measure(reference, lambda: nullcontext(reference))["kl_per_token"] == pytest.approx(0, abs=1e-6)



def test_the_kl_is_what_k3_estimates_from_the_policys_tokens_not_the_reverse(gpt, tokenizer):
    """At an answer position, the exact KL is what k3 = exp(r) - 1 - r (r = log ref - log policy) averages to over
    tokens drawn from the policy: KL(policy || reference). Two unrelated networks, so the reverse differs."""
    torch.manual_seed(5)
    policy, reference = copy.deepcopy(gpt), GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)).eval()
    with torch.no_grad():  # random networks are near uniform over the vocabulary, where KL is nearly symmetric
        policy.lm_head.weight.mul_(4)
    watch = SampleWatch(tokenizer, PROMPTS, DegenerationBounds(answer_tokens=12), seed=3)
    _, prompt, answer, stopped = watch.sample(policy)[0]
    with torch.no_grad():
        policy_logps = watch.next_token_log_probs(policy, prompt, answer, stopped)
        reference_logps = watch.next_token_log_probs(reference, prompt, answer, stopped)
    kl = (policy_logps.exp() * (policy_logps - reference_logps)).sum(-1)
    p, q = policy_logps[kl.argmax()], reference_logps[kl.argmax()]  # where the two differ most
    exact = float((p.exp() * (p - q)).sum())
    reverse = float((q.exp() * (q - p)).sum())
    drawn = torch.multinomial(p.exp(), 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    r = q[drawn] - p[drawn]
    k3 = float((r.exp() - 1 - r).mean())
    assert k3 == pytest.approx(exact, rel=0.05) and abs(reverse - exact) > 0.1 * exact


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)


def guard_in(run_dir, stop=True, resume_step=None):
    return DegenerationGuard(run_dir, run_dir / "report.json", DegenerationBounds(), watch=None, stop=stop,
                             advice="What to change: lower it", log=lambda _: None, resume_step=resume_step)


GOOD = {"chosen_logp_per_token": -1.0, "start_chosen_logp_per_token": -1.0, "kl_per_token": 0.01,
        "samples": [{"prompt": "p", "answer": "a"}]}
BAD = {**GOOD, "kl_per_token": 5.0}


def test_the_guard_keeps_the_last_good_weights_stops_at_a_flag_and_stays_stopped_when_resumed(tmp_path):
    model = Toy()
    guard = guard_in(tmp_path)
    assert guard.observe(10, GOOD, model) == [] and not guard.should_stop()
    kept = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        model.layer.weight.add_(1.0)
    assert guard.observe(20, BAD, model) and guard.should_stop()
    assert "flagged at step 20" in guard.summary() and "kept the weights of step 10" in guard.summary()
    assert "What to change: lower it" in guard.summary()
    assert guard.restore(model) == 10 and all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())

    report = json.loads((tmp_path / "report.json").read_text())
    assert [e["step"] for e in report["evaluations"]] == [10, 20] and report["flag"]["stopped"]
    assert report["evaluations"][1]["problems"] and report["evaluations"][0]["samples"] == GOOD["samples"]
    resumed = guard_in(tmp_path, resume_step=20)  # a crash after the flag: the run does not train again
    assert resumed.stopped and resumed.report["kept_step"] == 10


def test_a_resumed_guard_forgets_the_evaluations_after_its_checkpoint_and_a_fresh_one_everything(tmp_path):
    model = Toy()
    guard = guard_in(tmp_path)
    for step in (10, 20, 30):
        guard.observe(step, GOOD, model)
    resumed = guard_in(tmp_path, resume_step=20)
    assert [e["step"] for e in resumed.report["evaluations"]] == [10, 20]
    assert resumed.report["kept_step"] == 30  # the kept weights passed their evaluation all the same
    guard_in(tmp_path, resume_step=None)
    assert not (tmp_path / LAST_GOOD_FILE).exists()


def test_a_flag_before_any_evaluation_passed_leaves_nothing_to_keep(tmp_path):
    guard = guard_in(tmp_path)
    guard.observe(10, BAD, Toy())
    with pytest.raises(Degenerated, match="by its first evaluation \\(step 10\\).*Nothing good to keep"):
        guard.restore(Toy())
    warned = guard_in(tmp_path / "off", stop=False)
    warned.observe(10, BAD, Toy())
    warned.observe(20, GOOD, Toy())
    assert not warned.should_stop() and "flagged at step 10" in warned.summary()
    assert not (tmp_path / "off" / LAST_GOOD_FILE).exists()
    # Resumed after the warning: it is still said, and not as a stop.
    assert "flagged at step 10" in guard_in(tmp_path / "off", stop=False, resume_step=15).summary()
    assert guard_in(tmp_path / "off", stop=False, resume_step=5).summary() is None
