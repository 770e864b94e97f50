"""Multiple-choice scoring (llm/multiple_choice.py) against log-likelihoods computed by hand from a direct
forward pass, the lm-eval rules for acc and acc_norm, the chat template's rendering, truncation to the model's
context, and a model trained to know the answers; and the benchmark reader's line-level errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llm.chat import render_conversation, render_for_completion
from llm.chat_data import DataFormatError, read_benchmark, read_dataset
from llm.checkpoint import save_model
from llm.model import GPT, config_from_preset
from llm.evaluate_config import EvaluateConfig
from llm.multiple_choice import choice_requests, evaluate_benchmark, mean_and_stderr, score_questions
from llm.tokenizer import get_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = [
    {"question": "What colour is the sky?", "choices": ["blue", "green", "a very long answer indeed"], "answer": 0,
     "context": ""},
    {"question": "sits on the", "choices": ["mat", "moon"], "answer": 1, "context": "A cat"},
    {"question": "Two plus two is", "choices": ["four", "five", "six", "seven"], "answer": 0, "context": ""},
]


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


def tiny_model(tokenizer, seed: int = 0, block_size: int = 64) -> GPT:
    torch.manual_seed(seed)
    return GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=block_size)).eval()


def direct_loglikelihood(model: GPT, ids: list[int], continuation_length: int) -> float:
    """Sum of log p(token | everything before it) over the last `continuation_length` tokens, one plain forward."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    log_probs = F.log_softmax(logits[0].double(), dim=-1)
    positions = range(len(ids) - 1 - continuation_length, len(ids) - 1)
    return sum(log_probs[position, ids[position + 1]].item() for position in positions)


def test_base_model_scores_are_the_summed_log_probs_of_each_choice(tokenizer):
    model = tiny_model(tokenizer)
    result = score_questions(model, tokenizer, QUESTIONS, EvaluateConfig(batch_size=4), chat=False, device="cpu")
    assert result["questions"] == 3 and result["chat"] is False
    hits, norm_hits = [], []
    for question, prediction in zip(QUESTIONS, result["predictions"]):
        text = (question["context"] + "\n" if question["context"] else "") + question["question"]
        expected = []
        for choice in question["choices"]:
            continuation = tokenizer.encode(" " + choice)
            expected.append(direct_loglikelihood(model, tokenizer.encode(text) + continuation, len(continuation)))
        assert prediction["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
        # acc: the most likely choice; acc_norm: the most likely per character of the choice (lm-eval's rule).
        by_hand = max(range(len(expected)), key=lambda i: expected[i])
        by_hand_norm = max(range(len(expected)), key=lambda i: expected[i] / len(question["choices"][i]))
        assert (prediction["choice"], prediction["choice_norm"]) == (by_hand, by_hand_norm)
        hits.append(float(by_hand == question["answer"]))
        norm_hits.append(float(by_hand_norm == question["answer"]))
    assert result["acc"] == pytest.approx(sum(hits) / 3)
    assert result["acc_norm"] == pytest.approx(sum(norm_hits) / 3)
    assert result["acc_stderr"] == pytest.approx(mean_and_stderr(hits)[1])


def test_acc_norm_divides_by_the_choice_length_in_characters(tokenizer):
    # Each "long answer" token costs about as much as a "blue" token, so the long choice has the lower sum but
    # may have the higher per-character score: the two rules can disagree, and each must follow its own.
    model = tiny_model(tokenizer, seed=3)
    question = {"question": "Pick one:", "choices": ["x", "x" * 48], "answer": 1, "context": ""}
    prediction = score_questions(model, tokenizer, [question], EvaluateConfig(), False, "cpu")["predictions"][0]
    short, long = prediction["loglikelihoods"]
    assert prediction["choice"] == (0 if short >= long else 1)
    assert prediction["choice_norm"] == (0 if short / 1 >= long / 48 else 1)


def test_batching_and_padding_change_nothing(tokenizer):
    model = tiny_model(tokenizer)
    one = score_questions(model, tokenizer, QUESTIONS, EvaluateConfig(batch_size=1), False, "cpu")
    many = score_questions(model, tokenizer, QUESTIONS, EvaluateConfig(batch_size=64), False, "cpu")
    for a, b in zip(one["predictions"], many["predictions"]):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5)


def test_a_long_prompt_loses_its_oldest_tokens_not_the_choice(tokenizer):
    model = tiny_model(tokenizer, block_size=16)
    question = {"question": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                            "fifteen sixteen seventeen eighteen?", "choices": ["yes", "no"], "answer": 0, "context": ""}
    prediction = score_questions(model, tokenizer, [question], EvaluateConfig(), False, "cpu")["predictions"][0]
    for choice, score in zip(question["choices"], prediction["loglikelihoods"]):
        continuation = tokenizer.encode(" " + choice)
        ids = (tokenizer.encode(question["question"]) + continuation)[-17:]  # block_size + 1
        assert score == pytest.approx(direct_loglikelihood(model, ids, len(continuation)), abs=1e-4)


def test_chat_models_are_asked_through_the_chat_template(tokenizer):
    question = QUESTIONS[1]
    requests = choice_requests(tokenizer, question, chat=True)
    for (prompt, continuation), choice in zip(requests, question["choices"]):
        conversation = [{"role": "user", "content": "A cat\nsits on the"}, {"role": "assistant", "content": choice}]
        assert prompt == render_for_completion(tokenizer, conversation[:1])
        # The choice is the assistant's answer as the template renders it, before its <|im_end|>.
        whole, mask = render_conversation(tokenizer, conversation)
        assert prompt + continuation == whole[:len(prompt) + len(continuation)]
        assert sum(mask) == len(continuation) + 1  # the answer's tokens and its <|im_end|>
    model = tiny_model(tokenizer)
    prediction = score_questions(model, tokenizer, [question], EvaluateConfig(), True, "cpu")["predictions"][0]
    expected = [direct_loglikelihood(model, prompt + continuation, len(continuation))
                for prompt, continuation in requests]
    assert prediction["loglikelihoods"] == pytest.approx(expected, abs=1e-4)


def test_standard_error_is_the_sample_deviation_over_root_n():
    mean, stderr = mean_and_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75
    assert stderr == pytest.approx(math.sqrt(((0.25**2) * 3 + 0.75**2) / 3 / 4))
    assert mean_and_stderr([1.0]) == (1.0, None)


def test_a_model_trained_on_the_answers_scores_acc_one(tokenizer, tmp_path):
    # Four questions whose right answers sit at different places among the choices: chance is about 1 in 3.
    questions = [
        {"question": "Colour of the sky:", "choices": ["blue", "green", "loud"], "answer": 0, "context": ""},
        {"question": "Colour of grass:", "choices": ["purple", "green", "square"], "answer": 1, "context": ""},
        {"question": "Colour of snow:", "choices": ["hot", "heavy", "white"], "answer": 2, "context": ""},
        {"question": "Colour of coal:", "choices": ["black", "sweet", "liquid"], "answer": 0, "context": ""},
    ]
    model = tiny_model(tokenizer, seed=1)
    texts = [tokenizer.encode(q["question"] + " " + q["choices"][q["answer"]]) for q in questions]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(40):
        for ids in texts:
            _, loss = model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    save_model(model.eval(), tmp_path / "model", "gpt2")
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text("".join(json.dumps(q) + "\n" for q in questions))
    result = evaluate_benchmark(tmp_path / "model", benchmark, EvaluateConfig(batch_size=5), device="cpu")
    assert (result["acc"], result["acc_norm"], result["questions"], result["chat"]) == (1.0, 1.0, 4, False)
    assert result["acc_stderr"] == 0.0
    assert evaluate_benchmark(tmp_path / "model", benchmark, EvaluateConfig(max_questions=2),
                              device="cpu")["questions"] == 2


# ----------------------------------------------------------------------------- the benchmark reader

GOOD = {"question": "Q?", "choices": ["a", "b"], "answer": 1}


@pytest.mark.parametrize("line, field, words", [
    ({"choices": ["a", "b"], "answer": 0}, None, "missing question"),
    ({**GOOD, "question": ""}, "question", "is empty"),
    ({**GOOD, "question": 3}, "question", "must be a string"),
    ({**GOOD, "choices": ["a"]}, "choices", "at least 2"),
    ({**GOOD, "choices": "a, b"}, "choices", "at least 2"),
    ({**GOOD, "choices": ["a", 2]}, "choices[1]", "must be a string"),
    ({**GOOD, "choices": ["a", " "]}, "choices[1]", "is empty"),
    ({**GOOD, "choices": ["a", "b", "a"]}, "choices[2]", "repeats choices[0]"),
    ({**GOOD, "answer": 2}, "answer", "from 0 to 1"),
    ({**GOOD, "answer": -1}, "answer", "from 0 to 1"),
    ({**GOOD, "answer": "1"}, "answer", "whole number"),
    ({**GOOD, "answer": True}, "answer", "whole number"),
    ({**GOOD, "context": ["x"]}, "context", "must be a string"),
])
def test_a_bad_benchmark_line_is_named_by_file_line_and_field(tmp_path, line, field, words):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(line) + "\n")
    with pytest.raises(DataFormatError) as caught:
        read_dataset("benchmark", path, display_name="mine.jsonl")
    error = caught.value
    assert (error.file, error.line, error.field) == ("mine.jsonl", 3, field), str(error)
    assert words in error.problem, str(error)


def test_benchmark_lines_in_normal_form(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({**GOOD, "id": 7}) + "\n" + json.dumps({**GOOD, "context": "C", "answer": 0}) + "\n")
    assert read_benchmark(path) == [{"question": "Q?", "choices": ["a", "b"], "answer": 1, "context": ""},
                                    {"question": "Q?", "choices": ["a", "b"], "answer": 0, "context": "C"}]
    (tmp_path / "bench.txt").write_text("Q?\n")
    with pytest.raises(DataFormatError, match="must be .jsonl"):
        read_dataset("benchmark", tmp_path / "bench.txt")


# ----------------------------------------------------------------------------- workbench evaluate

def test_workbench_evaluate_prints_models_side_by_side(tokenizer, tmp_path, capsys):
    from llm.cli import main
    from llm.evaluate import evaluate
    from llm.prepare import prepare

    for seed in (0, 1):
        save_model(tiny_model(tokenizer, seed=seed), tmp_path / f"model-{seed}", "gpt2")
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    assert main(["evaluate", "--model", str(tmp_path / "model-0"), "--model", str(tmp_path / "model-1"),
                 "--data", str(benchmark), "--device", "cpu", "--json", str(tmp_path / "out.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "data", "questions", "acc", "acc_norm"]
    results = json.loads((tmp_path / "out.json").read_text())
    for line, result, seed in zip(lines[2:], results, (0, 1)):
        assert result == {**evaluate_benchmark(tmp_path / f"model-{seed}", QUESTIONS, device="cpu"),
                          "model": f"model-{seed}", "data": "bench.jsonl"}
        assert line.split() == [f"model-{seed}", "bench.jsonl", "3", f"{result['acc']:.4f}", "±",
                                f"{result['acc_stderr']:.4f}", f"{result['acc_norm']:.4f}", "±",
                                f"{result['acc_norm_stderr']:.4f}"]
    assert len(lines) == 4

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document {i}: the cat sat on the mat and looked at {i} birds." for i in range(60)))
    prepare(corpus, "gpt2", tmp_path / "prepared", val_fraction=0.2)
    assert main(["evaluate", "--model", str(tmp_path / "model-0"), "--data", str(tmp_path / "prepared"),
                 "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "data", "tokens", "loss", "perplexity", "bits", "per", "byte"]
    expected = evaluate(tmp_path / "model-0", tmp_path / "prepared", batch_size=8, device="cpu")
    assert lines[2].split() == ["model-0", "prepared", f"{expected['tokens']:,}", f"{expected['val_loss']:.4f}",
                                f"{expected['perplexity']:.4f}", f"{expected['val_bpb']:.4f}"]

    assert main(["evaluate", "--model", str(tmp_path / "model-0"), "--data", str(corpus), "--device", "cpu"]) == 2
    assert "corpus.txt: a benchmark dataset must be .jsonl" in capsys.readouterr().err
