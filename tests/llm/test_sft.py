"""Supervised fine-tuning: the data side (mask, truncation, split, resumable batches), the loss (equal to
Hugging Face's on the same weights), learning a pattern with LoRA, exact resume, and full fine-tuning."""

import hashlib
import json
import random

import pytest
import torch
from safetensors.torch import load_file

from llm.chat import end_of_turn_id, render_conversation
from llm.chat_batches import (IGNORE_INDEX, ConversationBatches, pad_batch, read_conversations, split_examples,
                              tokenize_conversations)
from llm.checkpoint import load_model, read_config, save_model
from llm.generate import SamplingSettings, chat_prompt, generate_tokens
from llm.model import GPT, config_from_preset
from llm.sft import SFTObjective, sft
from llm.sft_config import SFT_DEFAULTS, SFTConfig, sft_train_config
from llm.tokenizer import get_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = "red green blue black white pink brown grey gold silver orange purple".split()
ANIMALS = "cat dog fox owl bear wolf frog duck lion goat mouse horse".split()


def question(colour, animal):
    return {"role": "user", "content": f"What is the code for the {colour} {animal}?"}


def code(colour, animal):
    """The pattern: the question's two words, swapped, after CODE. Answering a pair never seen in training
    takes attention that finds both words and copies them, not a memorised table of answers."""
    return f"CODE {animal} {colour}"


def conversation(colour, animal):
    return [question(colour, animal), {"role": "assistant", "content": code(colour, animal)}]


def all_pairs():
    pairs = [(c, a) for c in COLOURS for a in ANIMALS]
    random.Random(0).shuffle(pairs)
    return pairs


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small BPE (356 ids) in which most words are one token: fast steps, a readable task."""
    corpus = [f"What is the code for the {c} {a}? CODE {a} {c}." for c in COLOURS for a in ANIMALS]
    directory = tmp_path_factory.mktemp("tokenizer") / "codes"
    train_tokenizer(iter(corpus * 3), 400, directory, name="codes")
    return directory


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return get_tokenizer(str(tokenizer_dir))


@pytest.fixture
def base_dir(tmp_path, tokenizer_dir, tokenizer):
    """A randomly initialised tiny GPT: SFT has to teach it the template, the pattern and when to stop."""
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64))
    return save_model(model, tmp_path / "base", str(tokenizer_dir))


def file_hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet(_line):
    pass


def small_run(**overrides):
    settings = dict(max_steps=6, batch_size=4, block_size=64, eval_every=3, eval_batches=2, log_every=1,
                    checkpoint_every=0, warmup=2, lr=1e-2, device="cpu")
    return sft_train_config(SFTConfig(method="lora"), **{**settings, **overrides})


# ----------------------------------------------------------------------------- the data side

def test_targets_are_the_assistant_tokens_shifted_by_one(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}] + conversation("red", "cat")
    ids, mask = render_conversation(tokenizer, messages)
    examples = tokenize_conversations(tokenizer, [messages], max_length=64)
    (inputs, targets), = examples.examples
    assert inputs.tolist() == ids[:-1]
    assert targets.tolist() == [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
    learnt = [t for t in targets.tolist() if t != IGNORE_INDEX]
    assert tokenizer.decode(learnt[:-1]) == "CODE cat red" and learnt[-1] == end_of_turn_id(tokenizer)
    assert (examples.conversations, examples.truncated, examples.dropped) == (1, 0, 0)


def test_truncation_and_dropping_are_counted(tokenizer):
    long_answer = {"role": "assistant", "content": " ".join(ANIMALS * 4)}
    only_user = [question("red", "cat")]
    answer_past_the_cut = [{"role": "user", "content": " ".join(COLOURS * 8)}, long_answer]
    conversations = [conversation("red", "cat"), [question("blue", "owl"), long_answer], only_user,
                     answer_past_the_cut]
    assert len(render_conversation(tokenizer, conversations[0])[0]) < 41
    result = tokenize_conversations(tokenizer, conversations, max_length=40)
    # Two are cut at 41 ids (40 inputs). The user-only one and the one whose answer starts after the cut
    # have nothing to learn and are dropped.
    assert (result.conversations, result.truncated, result.dropped) == (4, 2, 2)
    assert [len(inputs) for inputs, _ in result.examples] == [len(render_conversation(tokenizer,
                                                                                   conversations[0])[0]) - 1, 40]
    assert (result.examples[1][1] != IGNORE_INDEX).sum() > 0


def test_validation_split_is_seeded_and_never_empty():
    examples = [(torch.tensor([i]).numpy(), torch.tensor([i]).numpy()) for i in range(10)]
    train, val = split_examples(examples, 0.05, seed=3)
    assert len(val) == 1 and len(train) == 9  # 5% of 10 rounds to 0: at least one is held out
    again_train, again_val = split_examples(examples, 0.05, seed=3)
    assert [v[0][0] for v in val] == [v[0][0] for v in again_val]
    assert split_examples(examples[:1], 0.5, seed=3) == (examples[:1], [])
    assert split_examples(examples, 0.0, seed=3)[1] == []
    assert len(split_examples(examples, 0.5, seed=3)[1]) == 5


def test_batches_are_right_padded_and_resume_where_they_stopped(tokenizer):
    examples = tokenize_conversations(tokenizer, [conversation(c, a) for c, a in all_pairs()[:10]], 64).examples
    examples[0] = (examples[0][0][:5], examples[0][1][:5])  # one short example, to see the padding
    batch = pad_batch(examples[:3], pad_id=tokenizer.eot_id)
    length = max(len(inputs) for inputs, _ in examples[:3])
    assert batch["inputs"].shape == batch["targets"].shape == (3, length)
    assert batch["inputs"][0, 5:].eq(tokenizer.eot_id).all() and batch["targets"][0, 5:].eq(IGNORE_INDEX).all()
    assert batch["tokens"] == sum(len(inputs) for inputs, _ in examples[:3])

    source = ConversationBatches(examples, batch_size=4, seed=7, pad_id=0)
    seen = [source.next_batch() for _ in range(3)]  # 12 > 10: the third batch crosses into epoch 1
    state = source.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    expected = [source.next_batch()["inputs"] for _ in range(3)]
    resumed = ConversationBatches(examples, batch_size=4, seed=7, pad_id=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.next_batch()["inputs"], e) for e in expected)
    # Each epoch visits every example once, in a new order.
    first_epoch = ConversationBatches(examples, batch_size=10, seed=7, pad_id=0)
    orders = [[tuple(row) for row in first_epoch.next_batch()["targets"].tolist()] for _ in range(2)]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
    with pytest.raises(ValueError, match="resume=False"):
        ConversationBatches(examples[:5], batch_size=4, seed=7, pad_id=0).load_state_dict(state)


def test_chat_files_are_read_as_json_lines(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": conversation("red", "cat")}) + "\n\n")
    assert read_conversations(path) == [conversation("red", "cat")]
    assert read_conversations([{"messages": conversation("red", "cat")}, conversation("blue", "owl")]) == [
        conversation("red", "cat"), conversation("blue", "owl")]
    path.write_text('{"messages": [}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_conversations(path)


# ----------------------------------------------------------------------------- the loss

@pytest.mark.slow
def test_sft_loss_equals_transformers_loss_on_the_same_weights(tmp_path):
    """Our masked loss through the peft-wrapped GPT vs GPT2LMHeadModel(labels=-100 outside the answers) on the
    merged weights, exported through llm.hf_gpt2; HF shifts the labels itself, we shift when batching."""
    transformers = pytest.importorskip("transformers")
    from llm.hf_gpt2 import export_hf_gpt2
    from llm.lora import apply_lora, save_adapter

    tokenizer = get_tokenizer("gpt2")
    torch.manual_seed(0)
    base = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64))
    # hf_vocab_size = every row, so the HF softmax runs over the same 50304 logits as ours.
    base_dir = save_model(base, tmp_path / "base", "gpt2", extra={"hf_vocab_size": base.config.vocab_size})
    peft_model = apply_lora(base, SFTConfig(lora_dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.eval()
    conversations = [[{"role": "system", "content": "Answer in code."}] + conversation("red", "cat"),
                     conversation("gold", "horse") + conversation("pink", "duck")]
    examples = tokenize_conversations(tokenizer, conversations, 64).examples
    batch = pad_batch(examples, tokenizer.eot_id)
    objective = SFTObjective([], batch_size=2, eval_batches=1, pad_id=tokenizer.eot_id)
    with torch.no_grad():
        ours, extras = objective.loss(peft_model, batch)

    hf_dir = export_hf_gpt2(save_adapter(peft_model, tmp_path / "adapter", base_dir, "gpt2"), tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    length = batch["inputs"].shape[1] + 1
    input_ids = torch.full((2, length), tokenizer.eot_id)
    labels = torch.full((2, length), IGNORE_INDEX)
    for row, messages in enumerate(conversations):
        ids, mask = render_conversation(tokenizer, messages)
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(ids)] = torch.tensor([t if m else IGNORE_INDEX for t, m in zip(ids, mask)])
    with torch.no_grad():
        theirs = hf(input_ids, labels=labels).loss
    assert abs(ours.item() - theirs.item()) < 1e-5
    assert 0.0 <= extras["mean_token_accuracy"].item() <= 1.0


# ----------------------------------------------------------------------------- training

@pytest.mark.slow
def test_lora_sft_learns_the_pattern_and_to_stop_on_unseen_questions(base_dir, tokenizer, tmp_path):
    pairs = all_pairs()
    seen, unseen = pairs[:100], pairs[100:]  # 44 colour-animal pairs the model never saw answered
    base_hash = file_hash(base_dir / "model.safetensors")
    # SFT's defaults (rank 16, alpha 32, dropout 0.05, batch 8) except the rate, length and steps: the base
    # is random, so the adapters must build the copying from nothing; 3e-3 for 400 steps got 44/44 on each
    # of model seeds 0-5 (2e-4, LoRA's default for trained bases, barely moves a random one). The loss stays
    # near 4.7 nats even so: the frozen random embeddings (std 0.02) bound how large any logit can get, so
    # the right token wins the argmax without ever getting much probability. Hence greedy answers are checked.
    lora = SFTConfig(method="lora")
    config = sft_train_config(lora, max_steps=400, lr=3e-3, block_size=64, eval_every=200, device="cpu")
    result = sft(base_dir, [conversation(c, a) for c, a in seen], tmp_path / "run", sft_config=lora,
                 train_config=config, log=quiet)

    assert not result["stopped"] and result["step"] == 400 and result["architecture"] == "lora_adapter"
    base_params = sum(p.numel() for p in load_model(base_dir)[0].parameters())
    assert result["trainable_params"] == 32_768 and result["total_params"] == base_params + 32_768
    assert (result["conversations"], result["truncated"], result["dropped"]) == (100, 0, 0)
    assert result["val_conversations"] == 5 and result["mean_token_accuracy"] > 0.95
    assert file_hash(base_dir / "model.safetensors") == base_hash  # the base is only read

    model, loaded_tokenizer = load_model(result["model_dir"])
    greedy = SamplingSettings(max_new_tokens=12, temperature=0)
    followed = 0
    for colour, animal in unseen:
        ids, stops = chat_prompt(loaded_tokenizer, [question(colour, animal)])
        reply = [int(step[0]) for step in generate_tokens(model, ids, greedy, 1, stops, loaded_tokenizer.vocab_size)]
        ends_its_turn = reply[-1] == end_of_turn_id(loaded_tokenizer)
        followed += ends_its_turn and loaded_tokenizer.decode(reply[:-1]) == code(colour, animal)
    # >= 95 %: at most 2 of the 44 may miss. Measured 44/44 on four model seeds; the slack is for the
    # float differences of other CPUs and library versions, not for a model that half-learnt the task.
    assert followed >= 0.95 * len(unseen), f"{followed}/{len(unseen)} unseen questions answered by the pattern"


@pytest.mark.parametrize("method", ["lora", "full"])
def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(base_dir, tmp_path, method):
    conversations = [conversation(c, a) for c, a in all_pairs()[:24]]
    # LoRA dropout and grad_accum > 1: the resumed run must restore the RNG and the data position exactly.
    full = method == "full"
    sft_config = SFTConfig(method=method, lora_dropout=0.1, lora_r=4)
    config = small_run(grad_accum=2, lr=1e-2 if not full else 1e-3)
    whole = sft(base_dir, conversations, tmp_path / "whole", sft_config=sft_config, train_config=config, log=quiet)

    asked = []
    stopped = sft(base_dir, conversations, tmp_path / "parts", sft_config=sft_config, train_config=config,
                  should_stop=lambda: asked.append(1) or len(asked) >= 2, log=quiet)
    assert stopped["stopped"] and stopped["step"] == 2 and stopped["model_dir"] is None
    resumed = sft(base_dir, conversations, tmp_path / "parts", sft_config=sft_config, train_config=config, log=quiet)
    assert not resumed["stopped"] and resumed["step"] == 6
    assert resumed["loss"] == whole["loss"] and resumed["val_loss"] == whole["val_loss"]
    weights = "model.safetensors" if full else "adapter_model.safetensors"
    expected, actual = load_file(tmp_path / "whole" / weights), load_file(tmp_path / "parts" / weights)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    steps = [json.loads(line)["step"] for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_full_fine_tuning_writes_a_full_model_directory(base_dir, tmp_path):
    base_hash = file_hash(base_dir / "model.safetensors")
    records = []
    result = sft(base_dir, [conversation(c, a) for c, a in all_pairs()[:20]], tmp_path / "run",
                 sft_config=SFTConfig(method="full"), train_config=small_run(), on_metrics=records.append, log=quiet)
    assert result["architecture"] == "gpt" and result["trainable_params"] == result["total_params"]
    directory = tmp_path / "run"
    assert (directory / "model.safetensors").is_file() and not (directory / "adapter_config.json").exists()
    config = read_config(directory)
    assert config["architecture"] == "gpt" and config["chat"] is True and config["sft"]["method"] == "full"
    assert file_hash(base_dir / "model.safetensors") == base_hash
    model, _ = load_model(directory)
    base, _ = load_model(base_dir)
    assert not torch.equal(model.wte.weight, base.wte.weight)  # every weight moved, the embeddings too
    # The metrics the Jobs tab plots; tokens count every real token, not only the answers.
    assert {"loss", "mean_token_accuracy", "val_loss", "val_mean_token_accuracy", "tokens_per_s"} <= set(
        records[-1])
    assert result["tokens_seen"] == records[-1]["tokens"]


def test_sft_defaults_and_refusals(base_dir, tmp_path):
    # The learning rate is the method's rule at the model's width; at the reference width without one.
    assert sft_train_config(SFTConfig(method="lora")).lr == SFT_DEFAULTS.lora_lr.at_reference
    assert sft_train_config(SFTConfig(method="full"), 64).lr == SFT_DEFAULTS.full_lr.at(64)
    assert sft_train_config(SFTConfig(method="full"), lr=1e-3, max_steps=None).lr == 1e-3
    assert sft_train_config(SFTConfig(method="lora")).max_steps == SFT_DEFAULTS.loop["max_steps"]
    with pytest.raises(ValueError, match="resolve 'auto' to lora or full first"):
        sft_train_config(SFTConfig())  # "auto" needs the model: resolved at submit, or by the CLI, or by sft()
    with pytest.raises(ValueError, match="method: must be one of auto, lora, full"):
        SFTConfig(method="adapter")
    with pytest.raises(ValueError, match="no conversation has an assistant answer"):
        sft(base_dir, [[question("red", "cat")]], tmp_path / "run", train_config=small_run(), log=quiet)
    with pytest.raises(ValueError, match="starting model's own directory"):
        sft(base_dir, [conversation("red", "cat")], base_dir, train_config=small_run(), log=quiet)
