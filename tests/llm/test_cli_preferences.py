"""`workbench reward | score | dpo` and `generate --best-of` from the command line (llm/cli_preferences.py)."""

from __future__ import annotations

import json

import pytest

from llm.checkpoint import read_architecture
from llm.cli import main
from tests.support.polite import polite_pairs, printed_result

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_RUN = ["--max-steps", "3", "--batch-size", "4", "--block-size", "64", "--eval-every", "0", "--device", "cpu"]


def test_reward_score_dpo_and_best_of_from_the_command_line(base_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n"
                            for p in polite_pairs(12, 0)))
    assert main(["reward", "--model", str(base_dir), "--data", str(data), "--out", str(tmp_path / "rm"), *TINY_RUN,
                 "--method", "lora"]) == 0
    out = capsys.readouterr().out
    result = printed_result(out)
    assert result["step"] == 3 and result["architecture"] == "reward_model"
    assert out.startswith("method lora: LoRA adapter, as chosen\nlearning rate ")
    assert read_architecture(tmp_path / "rm") == "reward_model"

    assert main(["score", "--model", str(tmp_path / "rm"), "--data", str(data)]) == 0
    scored = capsys.readouterr().out
    assert "12 of 12 pairs scored" in scored and "accuracy" in scored

    assert main(["dpo", "--model", str(base_dir), "--data", str(data), "--out", str(tmp_path / "dpo"),
                 "--beta", "0.2", "--loss-type", "ipo", *TINY_RUN]) == 0
    out = capsys.readouterr().out
    result = printed_result(out)
    # No --method: "auto" trains all weights of the tiny model, and says so before the run.
    assert result["step"] == 3 and result["architecture"] == "gpt"
    assert out.startswith("method full: all weights: ") and "parameters; below 200 M" in out
    assert json.loads((tmp_path / "dpo" / "config.json").read_text())["dpo"]["loss_type"] == "ipo"

    assert main(["generate", "--model", str(tmp_path / "dpo"), "--chat", "--prompt", "What should I do?",
                 "--best-of", "3", "--reward-model", str(tmp_path / "rm"), "--max-new-tokens", "5",
                 "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "all 3 answers, best first" in err and len([line for line in err.splitlines() if "[" in line]) == 3

    # Mistakes are one line and exit code 2.
    assert main(["generate", "--model", str(tmp_path / "dpo"), "--prompt", "x", "--best-of", "3"]) == 2
    assert "--best-of needs --chat and --reward-model" in capsys.readouterr().err
    assert main(["score", "--model", str(base_dir), "--data", str(data)]) == 2
    assert "not a reward model" in capsys.readouterr().err
    assert main(["reward", "--model", str(base_dir), "--data", str(data), "--out", str(tmp_path / "rm"),
                 *TINY_RUN]) == 2  # a finished run's checkpoint is not overwritten without --resume
