"""DPO that cannot fail silently (llm/dpo.py + llm/degeneration.py), on a tiny model that starts out answering
coherently: at an aggressive learning rate an unguarded run leaves language while its preference accuracy looks
perfect, and the watch's signals say so; the guard stops such a run and keeps its last good weights; RPO's NLL term
keeps it coherent. The reports carry the sampled answers.

The task is tests/llm/test_reward.py's (a polite word preferred over a pushy one), with a small BPE trained on its
words so that a step takes milliseconds; "coherent" means what the SFT model was taught to write: "<Verb> <thing>
and <thing>." with one polite or pushy word anywhere. The SFT model writes that for 7 of its 8 watched answers."""

from __future__ import annotations

import json

import pytest

from llm.checkpoint import load_model
from llm.cli import main
from llm.degeneration import DegenerationBounds, SampleWatch
from llm.dpo import REPORT_FILE, dpo
from llm.dpo_config import DPOConfig, dpo_train_config
from tests.support.polite import coherent, coherent_sft_model, polite_pairs, printed_result

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# DPO's default for all weights at this policy's width (the tiny preset, 64: llm/dpo_config.py), aggressive once RPO
# is off: the sweep put the default a factor of 3 below where runs break, with RPO on as the default keeps it.
AGGRESSIVE_LR = 1e-3


def quiet(_line):
    pass


def coherent_share(samples: list[dict]) -> float:
    return sum(coherent(sample["answer"]) for sample in samples) / len(samples)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    return coherent_sft_model(tmp_path_factory.mktemp("coherent"))


def run_dpo(sft_dir, out_dir, lr, max_steps, eval_every, **settings):
    config = DPOConfig(method="full", **settings)
    return dpo(sft_dir, polite_pairs(300, 7), out_dir, dpo_config=config, log=quiet,
               train_config=dpo_train_config(config, max_steps=max_steps, batch_size=8, lr=lr, block_size=64,
                                             eval_every=eval_every, eval_batches=5, warmup=5, log_every=10,
                                             checkpoint_every=0, device="cpu"))


def test_an_aggressive_rate_without_the_guard_leaves_language_and_the_signals_say_so(sft_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({key: pair[key] for key in ("prompt", "chosen", "rejected")}) + "\n"
                            for pair in polite_pairs(300, 7)))
    assert main(["dpo", "--model", str(sft_dir), "--data", str(data), "--out", str(tmp_path / "dpo"), "--full",  # --method full's older name
                 "--lr", str(AGGRESSIVE_LR), "--rpo-alpha", "0", "--no-stop-on-degeneration", "--max-steps", "60",
                 "--eval-every", "20", "--eval-batches", "5", "--warmup", "5", "--batch-size", "8",
                 "--block-size", "64", "--checkpoint-every", "0", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    result = printed_result(out)
    # The CLI says so last, with what to change; the log lines before it showed the samples and the warning.
    assert err.rstrip().splitlines()[-1].startswith("WARNING: degeneration flagged at step 20")
    assert "sample at step 20: 'What should I do with" in out and "WARNING: the policy is degenerating" in out
    report = json.loads((tmp_path / "dpo" / REPORT_FILE).read_text())
    bounds, last = DegenerationBounds(), report["evaluations"][-1]
    # What the margin shows: a perfect preference accuracy. What the samples show: it stopped writing the task.
    assert result["val_rewards/accuracies"] >= 0.9 and result["step"] == 60 and result["kept_step"] is None
    assert coherent_share(report["start"]["samples"]) >= 0.75, report["start"]["samples"]
    assert coherent_share(last["samples"]) <= 0.25, last["samples"]
    # The signals: the chosen answers' log-probability per token fell past its bound, the KL passed its budget.
    assert last["start_chosen_logp_per_token"] - last["chosen_logp_per_token"] > bounds.chosen_logp_drop \
        or any(e["start_chosen_logp_per_token"] - e["chosen_logp_per_token"] > bounds.chosen_logp_drop
               for e in report["evaluations"])
    assert max(e["kl_per_token"] for e in report["evaluations"]) > bounds.kl_per_token
    assert report["flag"]["step"] == 20 and not report["flag"]["stopped"]
    assert "lower the learning rate (now 0.001), raise beta (now 0.1)" in result["degeneration"]
    assert "rpo_alpha, now 0" in result["degeneration"]
    assert result["samples"] == last["samples"] and len(result["samples"]) == 8


def test_the_guard_stops_an_aggressive_run_and_keeps_the_weights_of_its_last_good_evaluation(sft_dir, tmp_path):
    # Measured: KL 0.13 nats per token at step 15, 0.40 at step 30 (the budget is 0.25).
    result = run_dpo(sft_dir, tmp_path / "dpo", 3e-4, 80, 15, rpo_alpha=0.0)
    report = json.loads((tmp_path / "dpo" / REPORT_FILE).read_text())
    flagged, kept = report["flag"]["step"], result["kept_step"]
    assert report["flag"]["stopped"] and result["step"] == flagged < 80  # stopped early
    assert kept == flagged - 15 and result["model_dir"] == str(tmp_path / "dpo")
    kept_evaluation, flagged_evaluation = report["evaluations"][-2:]
    assert kept_evaluation["step"] == kept and kept_evaluation["problems"] == []
    assert flagged_evaluation["kl_per_token"] > DegenerationBounds().kl_per_token > kept_evaluation["kl_per_token"]
    assert result["samples"] == kept_evaluation["samples"] and result["kl"] == kept_evaluation["kl_per_token"]
    assert "kept the weights of step 15" in result["degeneration"]
    # The saved model is the kept one: sampled with the watch's seeds, it writes the kept evaluation's answers.
    model, tokenizer = load_model(tmp_path / "dpo")
    prompts = [[{"role": "user", "content": sample["prompt"]}] for sample in kept_evaluation["samples"]]
    again = SampleWatch(tokenizer, prompts, DegenerationBounds(), seed=1337).measure(model, None)
    assert again["samples"] == kept_evaluation["samples"]


def test_rpo_keeps_an_aggressive_run_coherent_while_it_learns_the_preference(sft_dir, tmp_path):
    result = run_dpo(sft_dir, tmp_path / "dpo", AGGRESSIVE_LR, 60, 20, rpo_alpha=1.0)
    report = json.loads((tmp_path / "dpo" / REPORT_FILE).read_text())
    assert report["flag"] is None and result["degeneration"] is None and result["step"] == 60
    assert result["val_rewards/accuracies"] >= 0.9
    assert coherent_share(result["samples"]) >= 0.75, result["samples"]
    assert result["kl"] < DegenerationBounds().kl_per_token


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the runner on PostgreSQL: test_preference_jobs
def test_a_flagged_job_says_so_in_its_log_its_summary_and_its_notice(sft_dir, workbench_env, session):
    """Through the worker's runner: a job that goes on after a flag (stop_on_degeneration off) succeeds, and says
    what was flagged and what to change in its log, its summary line and the notice the Jobs tab shows."""
    import shutil

    from sqlalchemy import select

    from db.models import DatasetKind, Job, JobLog, JobStatus, Model, ModelKind
    from tests.support.records import preference_lines
    from tests.support.records import add_dataset
    from web.services.lineage import report_card
    from worker.jobs import lifecycle as jobs
    from worker.runtime.runner import execute_job

    shutil.copytree(sft_dir, workbench_env.data_dir / "models" / "sft")
    config = json.loads((workbench_env.data_dir / "models" / "sft" / "config.json").read_text())
    policy = Model(name="coherent", kind=ModelKind.sft, tokenizer=config["tokenizer"], config=config["model"],
                   path="models/sft")
    session.add(policy)
    session.commit()
    pairs = add_dataset(session, workbench_env, DatasetKind.preference, preference_lines(300, 7), "prefs")
    job = jobs.create_job(session, "dpo", {
        "model_id": policy.id, "dataset_id": pairs.id, "method": "full", "lr": AGGRESSIVE_LR, "rpo_alpha": 0.0,
        "stop_on_degeneration": False, "max_steps": 40, "eval_every": 20, "eval_batches": 5, "warmup": 5,
        "batch_size": 8, "block_size": 64, "checkpoint_every": 0, "device": "cpu", "name": "broken"})
    claimed = jobs.claim_next_job(session, "test-host")
    assert execute_job(job.id, claimed.attempts, workbench_env) == JobStatus.succeeded
    session.expire_all()
    job = session.get(Job, job.id)
    assert job.error.startswith("degeneration flagged at step 20: KL from the start is")
    assert "What to change: lower the learning rate (now 0.001)" in job.error
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id).order_by(JobLog.id)))
    assert any(line.startswith("WARNING: the policy is degenerating at step 20") for line in lines)
    assert lines[-1].startswith("succeeded:") and "; WARNING: degeneration flagged at step 20" in lines[-1]
    card = dict(report_card(workbench_env, job.output_model_id, session=session))
    assert card["degeneration watch"] == job.error and any(label.startswith("sample: ") for label in card)
