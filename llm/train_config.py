"""`TrainConfig`: the training-loop settings every training job shares (pretrain, SFT, reward, DPO); and for the
kinds that start from trained weights, the fine-tuning method (`choose_method`: what `auto` stands for) and the
learning rate as a rule on the model's width (`FineTuningDefaults`, `WidthRule`).

Each field is declared once with its default, bounds and help (`llm.params.setting`); the worker's
validation, the Train forms and the CLI flags all read these declarations. Kept apart from
`llm/train.py` (the loop) because it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llm.memory import gpt_parameter_count
from llm.params import Setting, setting, settings_of


# How the ranks of a multi-device run share the work (llm/distributed.py: DDP, llm/sharding.py: FSDP).
PARALLELISM = ("ddp", "fsdp")


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
    parallelism: str = setting("ddp", choices=PARALLELISM, advanced=True,
                               help="with several devices (torchrun): ddp = a whole copy of the model per device; "
                                    "fsdp = each device keeps a share of the weights, gradients and optimizer "
                                    "state, for a model that does not fit one device (all weights only: no LoRA, no DPO or GRPO)")
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


# ----------------------------------------------------------------------------- fine-tuning: method and learning rate

FINE_TUNING_METHODS = ("auto", "lora", "full")
# `auto` trains every weight of a model up to this many parameters. Below it the weights, their gradients and
# AdamW's two moments (16 bytes a parameter in float32: 3.2 GB at 200 M) fit any worker this product runs on,
# so a LoRA adapter saves nothing that matters, and on small models it learns slower (issue 18: 0 of 30 prompts in
# the format with LoRA where all weights gave it). Above it, an adapter's memory saving starts to count. The
# kinds' memory check (worker/jobs/fit.py) still refuses a run that does not fit.
ALL_WEIGHTS_UP_TO = 200_000_000


@dataclass(frozen=True)
class MethodChoice:
    """What a fine-tuning run trains ("lora" or "full") and why, in plain words (the job log, the form, the CLI)."""

    method: str
    reason: str

    @property
    def full(self) -> bool:
        return self.method == "full"


def model_parameters(model_config: dict | None) -> int | None:
    """Parameters of the GPT a model config (GPTConfig as a dict: a Model row's `config`, a model directory's
    "model") describes; None when it does not hold the shape (a row made by hand)."""
    model_config = model_config or {}
    if not all(isinstance(model_config.get(key), int) for key in ("n_layer", "n_embd", "vocab_size")):
        return None
    return gpt_parameter_count(model_config["n_layer"], model_config["n_embd"], model_config["vocab_size"],
                               model_config.get("block_size") or 0)


def choose_method(method: str, model_config: dict | None) -> MethodChoice:
    """The one rule for `method`: "lora" and "full" are kept; "auto" becomes all weights for a model of up to
    ALL_WEIGHTS_UP_TO parameters, LoRA above it (or when the model's size is not known). Run once per run: at
    submit in the job layer (the stored params hold the choice and its reason), at start in the CLI."""
    if method not in FINE_TUNING_METHODS:
        raise ValueError(f"method must be one of {', '.join(FINE_TUNING_METHODS)}; got {method!r}")
    if method == "full":
        return MethodChoice("full", "all weights, as chosen")
    if method == "lora":
        return MethodChoice("lora", "LoRA adapter, as chosen")
    parameters = model_parameters(model_config)
    limit = _millions(ALL_WEIGHTS_UP_TO)
    if parameters is None:
        return MethodChoice("lora", "LoRA adapter: the model's size is not recorded, and an adapter fits any size")
    if parameters <= ALL_WEIGHTS_UP_TO:
        return MethodChoice("full", f"all weights: {_millions(parameters)} parameters; below {limit} an adapter "
                                    "saves little memory and learns slower")
    return MethodChoice("lora", f"LoRA adapter: {_millions(parameters)} parameters; above {limit} training all "
                                f"weights with AdamW needs about {16 * parameters / 1e9:.1f} GB for the weights, "
                                "gradients and optimizer state")


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count < 10_000_000 else f"{count / 1e6:,.0f} M"


# The width the learning-rate rules are stated at: GPT-2 small's (the gpt2-124m preset), the widest preset the
# sweep (bench/sweep_defaults.py) runs, so the rules' constants are read where they were measured.
REFERENCE_WIDTH = 768


@dataclass(frozen=True)
class WidthRule:
    """A learning rate as a function of the model's width: lr = at_reference * (REFERENCE_WIDTH / n_embd) ** power.
    With Adam a weight's update is about lr whatever its gradient's scale, so a wider layer, summing more inputs,
    moves its outputs more per step and takes a smaller rate (muP's 1 / width is power 1)."""

    at_reference: float
    power: float

    def at(self, n_embd: int | None) -> float:
        """The rate for a model `n_embd` wide (to 3 significant digits, as a stored row shows it); at the reference
        width when the width is not known."""
        if not n_embd:
            return self.at_reference
        rate = self.at_reference * (REFERENCE_WIDTH / n_embd) ** self.power
        return float(f"{rate:.3g}")  # 6e-4, not 6.000000000000001e-4


@dataclass(frozen=True)
class FineTuningDefaults:
    """The loop's defaults of a kind that starts from trained weights (SFT, reward, DPO), and its learning rate
    per method as a rule on the model's width: a LoRA adapter starts at zero and takes a larger rate than training
    every weight, which moves weights that are already trained. `loop` holds TrainConfig values other than lr."""

    loop: dict
    lora_lr: WidthRule
    full_lr: WidthRule
    # Why the kind refuses parallelism fsdp, when it does (a sentence); empty: FSDP allowed (`check_parallelism`).
    no_fsdp: str = ""

    def learning_rate(self, method: str, given: float | None = None, n_embd: int | None = None) -> float:
        """The rate a run uses: the one given, else the method's rule at the model's width."""
        if given is not None:
            return given
        if method not in ("lora", "full"):
            raise ValueError(f"the learning rate depends on the method: resolve {method!r} to lora or full first "
                             "(llm.train_config.choose_method)")
        return (self.full_lr if method == "full" else self.lora_lr).at(n_embd)

    def train_config(self, method: str, n_embd: int | None = None, **given) -> TrainConfig:
        """These defaults, then whatever the caller gave (values of None count as not given); the learning rate,
        unless given, the method's at the model's width."""
        given = {key: value for key, value in given.items() if value is not None}
        check_parallelism(method, given.get("parallelism", self.loop.get("parallelism", "ddp")), self.no_fsdp)
        return TrainConfig(**{**self.loop, **given, "lr": self.learning_rate(method, given.get("lr"), n_embd)})

    def settings(self) -> dict[str, Setting]:
        """TrainConfig's declared settings with these defaults, the learning rate left empty (a run fills it in
        from the method and the model's width, `learning_rate`): what the kind's form and its CLI flags offer."""
        declared = {name: spec.with_default(self.loop[name]) if name in self.loop else spec
                    for name, spec in settings_of(TrainConfig).items()}
        declared["lr"] = replace(declared["lr"], default=None, help=LR_HELP)
        return declared


def check_parallelism(method: str, parallelism: str | None, no_fsdp: str = "") -> None:
    """Refuse what FSDP does not run (ValueError, a sentence a person reads): LoRA (an adapter is a sliver of the
    model, which DDP already fits, and sharding frozen base weights beside it is not supported), and the kinds
    whose defaults say why not (`FineTuningDefaults.no_fsdp`)."""
    if parallelism == "fsdp" and no_fsdp:
        raise ValueError(f"parallelism fsdp is not supported here: {no_fsdp}. Use parallelism ddp")
    if parallelism == "fsdp" and method == "lora":
        raise ValueError("parallelism fsdp trains all weights: a LoRA adapter is not sharded. Use method full "
                         "(FSDP splits the weights, gradients and optimizer state across the devices) or "
                         "parallelism ddp with LoRA")


LR_HELP = "peak learning rate; empty: chosen from the model's width (see docs/defaults.md)"


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
