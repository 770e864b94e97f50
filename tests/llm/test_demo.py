"""`workbench demo` (llm/demo.py, issue 18 item 7): the whole loop on generated data at the defaults.

test_the_demo_runs_every_stage_and_writes_its_report: the plumbing, at a tiny scale (`--scale 0.05`, data and
steps cut to 5 %: nothing is claimed to learn there). The simulated labeler is swapped for a rule that splits any
answers (an untrained model never says the demo rule's polite closing), so the labels, reward, DPO and arena stages
have pairs to run on.
test_the_demo_at_the_defaults_improves_at_every_stage (slow): the real demo, its claims checked.
"""

from __future__ import annotations

import json
import shutil

import pytest

from llm import demo
from llm.checkpoint import load_model, read_config
from llm.cli import main
from llm.tokenizer import tokenizers_dir
from llm.demo import DemoConfig, arena_vote, rule_label

STAGES = ["tokenizer", "pretrain", "sft", "candidates", "labels", "reward", "dpo", "arena"]


def test_the_rule_labels_a_pair_only_where_answers_differ_in_its_property():
    import random

    polite = "Your new lamp is ready, glad to help."
    rude = "Your new lamp is ready, go away."
    garbled = "lamp lamp glad to help"
    prompt = [{"role": "user", "content": "Is my lamp ready?"}]
    pair = rule_label(prompt, [garbled, rude, polite], random.Random(0))
    assert pair["chosen"][0]["content"] == polite
    assert pair["rejected"][0]["content"] == rude  # the well-formed one without the property, not the garbled one
    assert "rule" in pair["labeler"] and "not a person" in pair["labeler"]
    assert rule_label(prompt, [rude, garbled], random.Random(0)) is None  # nothing the rule prefers
    assert rule_label(prompt, [polite, polite], random.Random(0)) is None
    assert (arena_vote(polite, rude), arena_vote(rude, polite)) == ("a", "b")
    assert (arena_vote(polite, polite), arena_vote(rude, garbled)) == ("tie", "both_bad")


def test_at_scale_shrinks_data_and_steps_but_never_the_learning_rate():
    small = DemoConfig.at_scale(0.1)
    assert small.pretrain_steps == 200 and small.sft_conversations == 80 and small.fine_tuning_share == 0.1
    assert small.vocab_size == DemoConfig().vocab_size and small.threads == 1
    assert DemoConfig.at_scale(1) == DemoConfig()
    with pytest.raises(ValueError, match="scale"):
        DemoConfig.at_scale(0)


def test_the_demo_runs_every_stage_and_writes_its_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "preferred", lambda text: len(text) % 2 == 0)  # a labeler that always finds pairs
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scale", "0.05"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [stage["stage"] for stage in report["stages"]] == STAGES
    for number, stage in enumerate(STAGES, 1):  # a progress line when each stage starts and when it ends
        assert printed.count(f"[{number}/8] {stage}:") == 2
    assert all(stage["wall_s"] >= 0 and stage["cpu_s"] >= 0 for stage in report["stages"])
    figures = {stage["stage"]: stage["figures"] for stage in report["stages"]}
    assert figures["tokenizer"]["vocab_size"] > DemoConfig().vocab_size  # 512 ids + the chat specials
    assert 0 <= figures["sft"]["base"]["form_and_ended"] <= 1 and 0 <= figures["reward"]["held_out_accuracy"] <= 1
    assert figures["labels"]["pairs"] > 0
    assert {row["model"] for row in figures["arena"]["leaderboard"]} == {"sft", "dpo"}
    assert set(report["checks"]) == {"sft_beats_base", "reward_ranks_right", "dpo_beats_sft",
                                     "best_of_beats_one_sample", "arena_rates_dpo_higher"}
    # The labeler is said to be a rule wherever it appears: the pairs, the arena's voter, the page.
    pairs = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]
    assert all("simulated" in pair["labeler"] for pair in pairs)
    assert "simulated" in figures["arena"]["voter"]
    page = (out / "report.md").read_text()
    assert "The labeler is a rule, not a person" in page and "| dpo |" in page
    assert "total" in printed and "stage" in printed  # the final table
    for model in ("base", "sft", "reward", "dpo"):
        assert (out / model / "config.json").is_file()
    # A second run into the same directory is refused before anything is overwritten.
    assert main(["demo", "--out", str(out), "--scale", "0.05"]) == 2
    assert "already holds a demo run" in capsys.readouterr().err

    # Published, its models name the tokenizer registered beside the workbench's trained ones, and load from there
    # with the demo's own copy gone; a second publish changes nothing, a different tokenizer of that name is refused.
    data_dir = tmp_path / "data"
    assert demo.publish(out, tokenizers_dir(data_dir)) == "demo"
    shutil.rmtree(out / "tokenizer")
    for model, _ in demo.MODELS:
        assert read_config(out / model)["tokenizer"] == "demo"
    policy, tokenizer = load_model(out / "dpo", data_dir=data_dir)
    assert tokenizer.name == "demo" and policy.config.vocab_size >= tokenizer.vocab_size
    shutil.copytree(tokenizers_dir(data_dir) / "demo", out / "tokenizer")
    assert demo.publish(out, tokenizers_dir(data_dir)) == "demo"
    (tokenizers_dir(data_dir) / "demo" / "tokenizer.tiktoken").write_text("")
    with pytest.raises(ValueError, match="a different tokenizer named 'demo' already exists"):
        demo.publish(out, tokenizers_dir(data_dir))


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory) -> dict:
    """The real demo, at the defaults (~1.5 minutes of CPU time; ~10 minutes wall on 2 busy shared cores)."""
    report = demo.run_demo(tmp_path_factory.mktemp("demo") / "out")
    return {stage["stage"]: stage["figures"] for stage in report["stages"]}


@pytest.mark.slow
def test_the_demo_at_the_defaults_sft_answers_in_the_form(full_demo):
    base, sft = full_demo["sft"]["base"], full_demo["sft"]["sft"]
    # The base model has read the words but never a chat: it never answers in the form. SFT at the defaults, on
    # held-out prompts (nouns it never saw in a chat), greedy: nearly always; 0.8 leaves room for a fresh noun
    # the 512-id BPE splits oddly.
    assert base["form_and_ended"] <= 0.1, base
    assert sft["form_and_ended"] >= 0.8, sft


@pytest.mark.slow
def test_the_demo_at_the_defaults_reward_model_ranks_held_out_pairs(full_demo):
    # The rule is a closing phrase, three against three: a reward model that learned it ranks every clean pair
    # right; 0.9 is the bar (issue 18 item 3), for fresh nouns that confuse it.
    assert full_demo["reward"]["held_out_accuracy"] >= 0.9


@pytest.mark.slow
def test_the_demo_at_the_defaults_dpo_and_best_of_n_raise_the_polite_share(full_demo):
    figures = full_demo["dpo"]
    sft, dpo, best = figures["sft"], figures["dpo"], figures["best_of"]
    # 160 sampled answers measure a share to about +-4 points: +20 points (the bar) is a real move.
    assert dpo["share"] >= sft["share"] + 0.2, (sft, dpo)
    assert dpo["ended"] >= 0.8  # still answering: DPO that leaves language is not a success
    assert best["best"] >= best["first"] + 0.2, best


@pytest.mark.slow
def test_the_demo_at_the_defaults_arena_rates_dpo_above_sft(full_demo):
    board = {row["model"]: row for row in full_demo["arena"]["leaderboard"]}
    assert board["dpo"]["rating"] > board["sft"]["rating"]
