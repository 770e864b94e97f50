"""The demo's report (llm/demo.py): out/report.json (every stage's figures and times) and out/report.md, a page
that leads with whether each stage's model did better than the one before. `table(report)` is the final table
the CLI prints. Imports no torch."""

from __future__ import annotations

import json
from pathlib import Path

from llm.atomic_files import atomic_write_text


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def stage_result(name: str, figures: dict) -> tuple[str, str]:
    """(what was measured, its result) of one stage: the progress line's and the table's words."""
    if name == "tokenizer":
        return "BPE vocabulary, bytes per token", (f"{figures['vocab_size']} ids, "
                                                   f"{figures['bytes_per_token']:.2f} bytes/token")
    if name == "pretrain":
        return "loss after pretraining", (f"{figures['loss']:.2f} (val {figures['val_loss']})"
                                          if figures.get("val_loss") else f"{figures['loss']:.2f}")
    if name == "sft":
        return ("greedy answers in the task's form, ended (held-out prompts)",
                f"base {_percent(figures['base']['form_and_ended'])} → "
                f"SFT {_percent(figures['sft']['form_and_ended'])}")
    if name == "candidates":
        return ("answers sampled from the SFT model (share polite)",
                f"{figures['answers']} ({_percent(figures['preferred_share'])})")
    if name == "labels":
        return ("pairs labeled by the rule (simulated, not a person)",
                f"{figures['pairs']} of {figures['prompts']} prompts")
    if name == "reward":
        return "reward model: held-out pair accuracy (chance 50 %)", _percent(figures["held_out_accuracy"])
    if name == "dpo":
        best = figures["best_of"]
        return ("sampled answers in the form and polite (held-out prompts)",
                f"SFT {_percent(figures['sft']['share'])} → DPO {_percent(figures['dpo']['share'])}; "
                f"SFT best-of-{best['n']} by reward {_percent(best['best'])}")
    if name == "arena":
        result = ", ".join(f"{row['model']} {row['rating']:.0f}" for row in figures["leaderboard"])
        dpo = figures["records"].get("dpo")
        if dpo:
            result += f" (DPO won {dpo['won']}, tied {dpo['tied']}, lost {dpo['lost']})"
        return "arena ratings, votes by the rule (simulated)", result
    return "", ", ".join(f"{key} {value}" for key, value in figures.items())


def rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(stage, what was measured, result, time) per stage."""
    return [(stage["stage"], *stage_result(stage["stage"], stage["figures"]),
             f"{duration(stage['wall_s'])} (CPU {duration(stage['cpu_s'])})") for stage in report["stages"]]


def table(report: dict) -> str:
    """A plain-text table of the stages, for the terminal."""
    header = ("stage", "measured", "result", "time")
    lines = [header] + rows(report)
    widths = [max(len(line[column]) for line in lines) for column in range(4)]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    text.append(f"total {duration(report['wall_s'])} (CPU {duration(report['cpu_s'])})")
    return "\n".join(text)


def markdown(report: dict) -> str:
    checks = report["checks"]
    said = {"sft_beats_base": "SFT answers in the task's form more often than the pretrained base",
            "reward_ranks_right": "the reward model ranks held-out pairs better than chance",
            "dpo_beats_sft": "DPO answers politely more often than its SFT start",
            "best_of_beats_one_sample": "best-of-N with the reward model beats one sample of the SFT model",
            "arena_rates_dpo_higher": "the arena rates DPO above SFT"}
    lines = ["# The whole loop on generated data (`workbench demo`)", "",
             "tokenizer → pretrain → SFT → candidates → simulated labels → reward model → DPO → arena, every "
             "fine-tuning stage at the defaults a user gets (no learning rate, method or step count given).", "",
             f"**The labeler is a rule, not a person**: {report['labeler']}. It labels the candidates and votes in "
             "the arena.", "",
             "| stage | measured | result | time |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows(report)]
    lines += ["", f"Total: {duration(report['wall_s'])} wall, {duration(report['cpu_s'])} CPU (user + sys of "
                  "all threads).", "", "## Each stage better than the one before", ""]
    lines += [f"- {'yes' if passed else '**no**'}: {said.get(name, name)}" for name, passed in checks.items()]
    examples = {stage["stage"]: stage["figures"] for stage in report["stages"]}
    if "dpo" in examples:
        lines += ["", "## Answers to held-out prompts", ""]
        for model in ("sft", "dpo"):
            for text in examples["dpo"][model].get("examples", []):
                lines.append(f"- {model.upper()}: {text!r}")
    lines += ["", "Figures: report.json; each stage's log: logs/; the models: base/, sft/, reward/, dpo/.", ""]
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "report.md", markdown(report))
