"""`TrainConfig`: the training-loop settings every training job shares (pretrain, SFT, reward, DPO).

Each field is declared once with its default, bounds and help (`llm.params.setting`); the worker's
validation, the Train forms and the CLI flags all read these declarations. Kept apart from
`llm/train.py` (the loop) because it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llm.params import Setting, setting, settings_of


@dataclass
class TrainConfig:
    max_steps: int = setting(1000, minimum=1, maximum=10_000_000, help="optimizer steps")
    batch_size: int = setting(16, minimum=1, maximum=4096, help="sequences per micro-batch")
    block_size: int = setting(128, minimum=8, maximum=8192, help="tokens per sequence (the longest context)")
    grad_accum: int = setting(1, minimum=1, maximum=1024, advanced=True,
                              help="micro-batches per optimizer step (effective batch = batch_size x grad_accum)")
    lr: float = setting(1e-3, minimum=0, maximum=1, exclusive_minimum=True, help="peak learning rate",
                        label="learning rate")
    min_lr: float | None = setting(None, type="float", minimum=0, maximum=1, advanced=True,
                                   help="learning rate at the end of the cosine; empty = lr / 10")
    warmup: int = setting(100, minimum=0, maximum=10_000_000, help="steps of linear warmup from 0 to lr")
    weight_decay: float = setting(0.1, minimum=0, maximum=10, advanced=True,
                                  help="AdamW decay on matrices only (not biases, norm gains)")
    beta1: float = 0.9            # expert knobs: not offered in forms or flags
    beta2: float = 0.95
    grad_clip: float = setting(1.0, minimum=0, maximum=1e6, advanced=True,
                               help="max global gradient norm; 0 disables clipping")
    eval_every: int = setting(250, minimum=0, maximum=10_000_000,
                              help="steps between evaluations (also at the end); 0 = only at the end")
    eval_batches: int = setting(20, minimum=1, maximum=100_000, advanced=True, help="batches per evaluation")
    log_every: int = setting(10, minimum=1, maximum=10_000_000, advanced=True,
                             help="steps between progress lines / metrics records")
    checkpoint_every: int = setting(500, minimum=0, maximum=10_000_000,
                                    help="steps between checkpoints (also at the end and on stop); 0 = only then")
    seed: int = setting(1337, minimum=0, maximum=2**32 - 1, help="same seed, same run")
    device: str = setting("auto", type="device", advanced=True, help="auto | cpu | cuda | cuda:N")
    compile: bool | str = setting("auto", type="compile", advanced=True,
                                  help="torch.compile: auto = on CUDA only (on the CPU it costs more than it saves)")
    dtype: str = setting("auto", choices=("auto", "float32", "bfloat16"), advanced=True,
                         help="autocast dtype: auto = bf16 on CUDA, float32 on the CPU")
    peak_flops: float | None = None  # FLOP/s for MFU; None = the GPU's data sheet or a measured matmul

    def __post_init__(self):
        # The declarations above are the one rule: a value a job's params or a CLI flag would refuse is refused
        # here too, in the job layer's words ("block_size: must be at least 8, got 4"), and a value they would
        # convert (a whole float, "CUDA:0") is converted the same way.
        for name, declared in settings_of(TrainConfig).items():
            value = getattr(self, name)
            if value is None and declared.default is None:  # optional: decided when the run starts (min_lr)
                continue
            try:
                setattr(self, name, declared.check(name, value))
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


# ----------------------------------------------------------------------------- fine-tuning's learning rate

@dataclass(frozen=True)
class FineTuningDefaults:
    """The loop's defaults of a kind that starts from trained weights (SFT, reward, DPO), and the one rule for
    its learning rate: a LoRA adapter starts at zero and takes a larger rate than training every weight, which
    moves weights that are already trained. `loop` holds TrainConfig values; its "lr" is the LoRA rate."""

    loop: dict
    full_lr: float

    def learning_rate(self, full: bool, given: float | None = None) -> float:
        """The rate a run uses: the one given, else LoRA's or all weights' default."""
        if given is not None:
            return given
        return self.full_lr if full else self.loop["lr"]

    def train_config(self, full: bool, **given) -> TrainConfig:
        """These defaults, then whatever the caller gave (values of None count as not given)."""
        given = {key: value for key, value in given.items() if value is not None}
        return TrainConfig(**{**self.loop, **given, "lr": self.learning_rate(full, given.get("lr"))})

    @property
    def lr_help(self) -> str:
        return f"peak learning rate; empty: {self.loop['lr']:g} with LoRA, {self.full_lr:g} when training all weights"

    def settings(self) -> dict[str, Setting]:
        """TrainConfig's declared settings with these defaults, the learning rate left empty (a run fills it in
        by LoRA or all weights, `learning_rate`): what the kind's form and its CLI flags offer."""
        declared = {name: spec.with_default(self.loop[name]) if name in self.loop else spec
                    for name, spec in settings_of(TrainConfig).items()}
        declared["lr"] = replace(declared["lr"], default=None, help=self.lr_help)
        return declared


# ----------------------------------------------------------------------------- a schedule that fits the run

# Settings counted in steps whose defaults were chosen for the default number of steps.
SCHEDULE_FIELDS = ("warmup", "eval_every", "checkpoint_every")


def fit_schedule_to_steps(values: dict, defaults: dict) -> dict[str, int]:
    """Warmup, eval_every and checkpoint_every for a run shorter than the default one.

    A value left at its default (`defaults` holds max_steps and the SCHEDULE_FIELDS) shrinks to the same
    share of `values["max_steps"]` that the default has of the default max_steps: pretraining's warmup of
    100 in 1000 steps becomes 10 in a 100-step run, eval every 250 becomes 25, checkpoint every 500
    becomes 50. Longer runs keep the defaults; values set to something else are kept as they are.
    Returns only the values that change.
    """
    max_steps, default_steps = values["max_steps"], defaults["max_steps"]
    changed = {}
    if max_steps >= default_steps:
        return changed
    for name in SCHEDULE_FIELDS:
        default = defaults.get(name)
        if default is None or values.get(name) != default or default == 0:
            continue
        lowest = 0 if name == "warmup" else 1  # 0 means "never" for eval_every / checkpoint_every
        changed[name] = max(lowest, round(default * max_steps / default_steps))
    return changed


@dataclass(frozen=True)
class ScheduleProblem:
    field: str
    message: str
    refuses: bool  # the run would be pointless: refused at submit, not only warned about


def schedule_problems(values: dict) -> list[ScheduleProblem]:
    """What does not fit `values["max_steps"]`, in the form's terms (field names and numbers)."""
    max_steps = values["max_steps"]
    problems = []
    warmup = values.get("warmup") or 0
    if warmup >= max_steps:
        problems.append(ScheduleProblem("warmup", f"warmup {warmup} ≥ max_steps {max_steps}: the learning rate "
                                                  f"never decays; use a warmup below {max_steps}", True))
    elif warmup > max_steps // 2:
        problems.append(ScheduleProblem("warmup", f"warmup {warmup} is over half of max_steps {max_steps}: most "
                                                  "of the run is spent warming up", False))
    eval_every = values.get("eval_every") or 0
    if eval_every > max_steps:
        problems.append(ScheduleProblem("eval_every", f"eval_every {eval_every} > max_steps {max_steps}: the "
                                                      "model is evaluated only once, at the end", False))
    checkpoint_every = values.get("checkpoint_every") or 0
    if checkpoint_every > max_steps:
        problems.append(ScheduleProblem("checkpoint_every", f"checkpoint_every {checkpoint_every} > max_steps "
                                                            f"{max_steps}: the only checkpoint is the final one",
                                        False))
    return problems
