"""Training-step benchmark: our GPT (llm/model.py) against Hugging Face `GPT2LMHeadModel`.

Both models get identical dimensions (n_layer/n_head/n_embd/n_positions, vocab 50304, dropout 0),
the same token batch, the same loss (mean next-token cross-entropy over the same targets: HF gets
`shift_labels`, so it scores exactly the positions we score) and the same AdamW (lr 6e-4,
betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only, `fused=True`: the implementation the HF
Trainer defaults to on torch >= 2.8). One timed step = forward + backward + optimizer step + zero_grad.

Every variant is built in the same process and the timed steps are interleaved round by round
(A B C, C B A, A B C, ...), so a neighbour's burst of load hits all of them alike; figures are medians.
A large float32 `torch.mm` is one of the interleaved "variants", so the matmul peak that training
FLOP/s are compared with is measured under the same conditions.

Peak memory is the RSS high-water mark (VmHWM; not ru_maxrss, which Linux carries over from the parent
across fork + exec) of a fresh subprocess per variant that
imports torch + transformers, builds one model and runs three training steps; `*_peak_rss_mb` is the
whole process, `*_train_rss_mb` the growth over the process right before the model was built.

What the CPU computes natively decides what is timed (`bench.common.bf16_emulated`): without bf16 in hardware
(no avx512_bf16 / amx_bf16 flag) bf16 autocast is emulated, several times slower than float32, so `--quick`
skips the bf16 variants, the bf16 matmul probe and the bf16 loss check (figures "skipped": {variant: why}),
and a full run times them in EMULATED_ROUNDS rounds only ("emulated": {variant: why}). The timed rounds
fill what is left of the time budget (`--budget-s`; 60 s per benchmark with --quick) after building the
models and the loss check; the rounds each median is of are reported beside it (`train_rounds[...]`).

Run on its own: `python -m bench.bench_train [--quick] [--budget-s S]`, or with ad-hoc variants:
`python -m bench.bench_train --variants ours:fp32,ours:bf16:compile,hf-sdpa:fp32 --shape tiny --repeats 9`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.common import (PAGE_MB, TimeBudget, add_budget_argument, bf16_emulated, current_rss_bytes,
                          interleaved_runs, loop_figures, machine_info, median, paired_speedup, peak_rss_bytes,
                          print_figures, print_table, run_json_subprocess, time_budget)

THREADS = 2
VOCAB = 50304
SHAPES = {  # name -> (preset, batch, sequence length)
    "tiny": ("tiny", 8, 128),
    "124m": ("gpt2-124m", 1, 1024),
}
ADAMW = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
WEIGHT_DECAY = 0.1


@dataclass(frozen=True)
class Variant:
    """One way of running a training step. Spelled `impl:dtype[:compile][:opt=fused|foreach|forloop]`.

    impl: `ours`, `ours-ref` (our model with the loss spelled `F.cross_entropy(logits.float())`, the
    reference for llm.model.cross_entropy), `hf-sdpa` or `hf-eager` (HF's attn_implementation); dtype: `fp32` or `bf16`
    (bf16 = `torch.autocast("cpu", torch.bfloat16)` around the forward pass, master weights float32).
    """
    impl: str
    dtype: str = "fp32"
    compile: bool = False
    opt: str = "fused"

    @classmethod
    def parse(cls, spec: str) -> "Variant":
        parts = spec.split(":")
        impl, dtype, compile_, opt = parts[0], "fp32", False, "fused"
        for part in parts[1:]:
            if part in ("fp32", "bf16"):
                dtype = part
            elif part == "compile":
                compile_ = True
            elif part.startswith("opt="):
                opt = part[4:]
            else:
                raise ValueError(f"unknown variant part {part!r} in {spec!r}")
        if impl not in ("ours", "ours-ref", "hf-sdpa", "hf-eager") or opt not in ("fused", "foreach", "forloop"):
            raise ValueError(f"bad variant {spec!r}")
        return cls(impl, dtype, compile_, opt)

    @property
    def name(self) -> str:
        return ":".join([self.impl, self.dtype] + (["compile"] if self.compile else [])
                        + ([f"opt={self.opt}"] if self.opt != "fused" else []))


def _config(preset: str):
    from llm.model import PRESETS, GPTConfig
    return GPTConfig(vocab_size=VOCAB, dropout=0.0, **PRESETS[preset])


def build_model(impl: str, preset: str, seed: int = 0) -> torch.nn.Module:
    cfg = _config(preset)
    torch.manual_seed(seed)
    if impl in ("ours", "ours-ref"):
        from llm.model import GPT
        model = GPT(cfg)
    else:
        import transformers
        transformers.logging.set_verbosity_error()
        from transformers import GPT2Config, GPT2LMHeadModel
        hf_config = GPT2Config(vocab_size=VOCAB, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                               n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                               attn_pdrop=0.0, attn_implementation=impl.split("-", 1)[1])
        model = GPT2LMHeadModel(hf_config)
        assert model.config._attn_implementation == impl.split("-", 1)[1]
    return model.train()


def make_optimizer(model: torch.nn.Module, opt: str) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kind = {"fused": dict(fused=True), "foreach": dict(foreach=True), "forloop": dict(foreach=False)}[opt]
    return torch.optim.AdamW(groups, **ADAMW, **kind)


def make_batch(preset: str, batch: int, seq: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: inputs and their next tokens (ids < 50257, GPT-2's real vocabulary)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50257, (batch, seq + 1), generator=gen)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def make_step(variant: Variant, preset: str, batch: int, seq: int, device: str = "cpu"):
    """(step function returning the loss tensor, model) for one variant, on `device` (bench/gpu_check.py: CUDA)."""
    model = build_model(variant.impl, preset).to(device)
    optimizer = make_optimizer(model, variant.opt)
    forward = torch.compile(model) if variant.compile else model
    x, y = (tensor.to(device) for tensor in make_batch(preset, batch, seq))
    bf16 = variant.dtype == "bf16"
    device_type = torch.device(device).type

    if variant.impl == "ours":
        def loss_fn():
            return forward(x, y)[1]
    elif variant.impl == "ours-ref":  # the textbook loss: F.cross_entropy over float32 logits
        def loss_fn():
            logits = forward(x)[0]
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
    else:
        def loss_fn():
            return forward(input_ids=x, labels=y, shift_labels=y).loss

    def step():
        with torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step, model


def flops_per_token(preset: str, seq: int) -> float:
    """Training FLOPs per token of the shape (6N + attention), from our model's accounting."""
    from llm.model import GPT
    with torch.device("meta"):
        model = GPT(_config(preset))
    return float(model.flops_per_token(seq))


# ----------------------------------------------------------------------------- measurements

def measure(variants: list[Variant], shape: str, repeats: int, warmup: int, matmul: bool = True,
            log=print, bf16_matmul: bool = True, budget: TimeBudget | None = None,
            fewer_rounds: dict[str, int] | None = None) -> dict:
    """Interleaved timing of the variants (plus float32 and, with `bf16_matmul`, bf16 matmul probes); returns
    raw and median figures. `budget` and `fewer_rounds`: see `bench.common.interleaved_runs`."""
    preset, batch, seq = SHAPES[shape]
    fns, first_step_s = {}, {}
    for variant in variants:
        gc.collect()
        step, _model = make_step(variant, preset, batch, seq)
        start = time.perf_counter()
        step()  # the first step: compile (if any), optimizer state allocation
        first_step_s[variant.name] = time.perf_counter() - start
        fns[variant.name] = step
        log(f"  [{shape}] built {variant.name}: first step {first_step_s[variant.name]:.1f}s")
    size, mm_calls = 2048, 4
    if matmul:
        # Several back-to-back products per probe: a single 0.1 s mm right after a training step measured
        # well below the peak (cold caches), which made training look faster than the matmul "peak".
        dtypes = (torch.float32, torch.bfloat16) if bf16_matmul else (torch.float32,)
        mats = {dt: (torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)) for dt in dtypes}
        fns["matmul_fp32"] = lambda: [torch.mm(*mats[torch.float32]) for _ in range(mm_calls)]
        if bf16_matmul:
            fns["matmul_bf16"] = lambda: [torch.mm(*mats[torch.bfloat16]) for _ in range(mm_calls)]
    runs = interleaved_runs(fns, repeats=repeats, warmup=warmup, budget=budget, fewer_rounds=fewer_rounds)
    result = {"shape": shape, "preset": preset, "batch": batch, "seq": seq, "tokens_per_step": batch * seq,
              "flops_per_token": flops_per_token(preset, seq), "runs": runs, "first_step_s": first_step_s}
    for name, timing in runs.items():
        result.setdefault("median_s", {})[name] = median(timing["wall"])
        result.setdefault("median_cpu_s", {})[name] = median(timing["cpu"])
    if matmul:
        # A peak is the best the machine did: the fastest round, not the median (training gets medians,
        # so the utilisation figures lean against us).
        for name in ("matmul_fp32", "matmul_bf16"):
            if name in runs:
                result[f"{name}_flops"] = mm_calls * 2 * size ** 3 / min(runs[name]["wall"])
    for variant in variants:
        seconds = result["median_s"][variant.name]
        # Compile time = what the first step cost beyond a normal (warm) step plus its warm-up steps.
        result.setdefault("tokens_per_s", {})[variant.name] = batch * seq / seconds
        if variant.compile:
            result.setdefault("compile_s", {})[variant.name] = first_step_s[variant.name] - seconds
    return result


def memory_probe(spec: str, shape: str, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of building one model and running `steps` training steps."""
    torch.set_num_threads(THREADS)
    importlib.import_module("transformers")  # both sides' processes pay the same import cost
    preset, batch, seq = SHAPES[shape]
    gc.collect()
    before = current_rss_bytes()
    step, _model = make_step(Variant.parse(spec), preset, batch, seq)
    for _ in range(steps):
        step()
    peak = peak_rss_bytes()
    return {"peak_rss_mb": peak / 2 ** 20, "train_rss_mb": (peak - before) / 2 ** 20}


def memory(spec: str, shape: str) -> dict:
    try:
        return run_json_subprocess("bench.bench_train", "memory_probe", {"spec": spec, "shape": shape})
    except Exception as exc:  # a figure we could not take is reported, not fatal
        return {"error": str(exc)[-500:]}


def bf16_loss_check(steps: int, preset: str = "tiny", batch: int = 8, seq: int = 128) -> dict:
    """Train the same model from the same init on the same batches in float32 and in bf16 autocast.

    Returns the two final losses (mean of the last 5 steps) and the largest per-step |difference|.
    The batches come from a tiny synthetic "language" (repeated random phrases) so the loss falls.
    """
    gen = torch.Generator().manual_seed(7)
    phrases = torch.randint(0, 50257, (64, 16), generator=gen)
    stream = phrases[torch.randint(0, 64, (4096,), generator=gen)].flatten()
    losses = {}
    for dtype in ("fp32", "bf16"):
        model = build_model("ours", preset, seed=3)
        optimizer = make_optimizer(model, "fused")
        batch_gen = torch.Generator().manual_seed(11)
        curve = []
        for _ in range(steps):
            starts = torch.randint(0, stream.numel() - seq - 1, (batch,), generator=batch_gen)
            chunk = torch.stack([stream[s:s + seq + 1] for s in starts.tolist()])
            with torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext():
                _, loss = model(chunk[:, :-1], chunk[:, 1:])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            curve.append(loss.item())
        losses[dtype] = curve
    diffs = [abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"])]
    tail = min(5, steps)
    return {"bf16_check_steps": steps,
            "bf16_check_loss_first": losses["fp32"][0],
            "bf16_check_loss_fp32": sum(losses["fp32"][-tail:]) / tail,
            "bf16_check_loss_bf16": sum(losses["bf16"][-tail:]) / tail,
            "bf16_check_max_abs_diff": max(diffs)}


# ----------------------------------------------------------------------------- the benchmark

# "ours-best" / "hf-best": the fastest eager (not compiled) configuration of each side that was measured:
# precision (fp32, bf16 autocast) x, for HF, attention implementation (sdpa, eager). Compiled variants
# (full mode only) are reported on their own: compiling costs tens of seconds per run on this CPU.
OURS_FP32 = "ours:fp32"
EMULATED_ROUNDS = 3  # a full run's timed rounds of an emulated precision: each of its steps costs several native ones
BF16_PROBES = ("matmul_bf16", "bf16_check")  # the bf16 measurements besides the variants


def _plan(quick: bool) -> dict:
    """shape -> (variant specs, timed repeats, warm-up steps after the first)."""
    tiny = ["ours:fp32", "ours:bf16", "hf-sdpa:fp32", "hf-eager:fp32", "hf-sdpa:bf16"]
    big = ["ours:fp32", "ours:bf16", "hf-sdpa:fp32", "hf-sdpa:bf16"]
    if quick:  # minutes even on a busy machine: the tiny shape only (its ratio is the quick headline)
        return {"tiny": (tiny, 7, 1)}
    compiled = ["ours:bf16:compile", "hf-sdpa:bf16:compile"]
    return {"tiny": (tiny + ["hf-eager:bf16"] + compiled, 21, 1),
            "124m": (big + ["hf-eager:fp32"] + compiled, 7, 1)}


def precision_plan(plan: dict, quick: bool, bf16_reason: str | None) -> tuple[dict, dict, dict]:
    """What runs where bf16 is emulated for `bf16_reason` (None: native, the plan as it is):
    (plan, skipped {name: why}, emulated {name: why}). `--quick` skips every bf16 measurement (the variants,
    the bf16 matmul probe, the bf16 loss check); a full run keeps them, timed in EMULATED_ROUNDS rounds."""
    if bf16_reason is None:
        return plan, {}, {}
    bf16 = [spec for specs, _, _ in plan.values() for spec in specs if Variant.parse(spec).dtype == "bf16"]
    names = {name: bf16_reason for name in [*dict.fromkeys(bf16), *BF16_PROBES]}
    if not quick:
        return plan, {}, names
    kept = {shape: ([spec for spec in specs if spec not in names], repeats, warmup)
            for shape, (specs, repeats, warmup) in plan.items()}
    return kept, names, {}


def _shape_figures(res: dict, specs: list[str], suffix: str) -> dict:
    """The figures of one measured shape; the bf16 ones only where bf16 variants (and the bf16 probe) ran."""
    tps, runs = res["tokens_per_s"], res["runs"]
    eager = [s for s in specs if ":compile" not in s]
    ours_best = max((s for s in eager if s.startswith("ours")), key=tps.get)
    hf_best = max((s for s in eager if s.startswith("hf")), key=tps.get)
    hf_fp32 = max((s for s in eager if s.startswith("hf") and ":fp32" in s), key=tps.get)
    hf_bf16 = max((s for s in eager if s.startswith("hf") and ":bf16" in s), key=tps.get, default=None)
    fpt = res["flops_per_token"]
    f = loop_figures("train", res, "tokens_per_s", specs, suffix)
    for spec, seconds in res.get("compile_s", {}).items():
        f[f"train_compile_s{suffix}[{spec}]"] = seconds
    f.update({
        f"train_ours_best{suffix}": ours_best,
        f"train_hf_best{suffix}": hf_best,
        f"train_hf_attn{suffix}": hf_fp32.split(":")[0][3:],  # HF's faster attention in float32
        f"train_tokens_per_s_ours{suffix}": tps[OURS_FP32],
        f"train_tokens_per_s_hf{suffix}": tps[hf_fp32],
        # The headline: equal work at the precision both sides default to (float32; HF with its faster
        # attention), also as the median of round-by-round ratios and as a ratio of CPU times.
        f"train_vs_hf{suffix}": tps[OURS_FP32] / tps[hf_fp32],
        f"train_vs_hf_paired{suffix}": paired_speedup(runs[hf_fp32]["wall"], runs[OURS_FP32]["wall"]),
        f"train_vs_hf_cpu{suffix}": res["median_cpu_s"][hf_fp32] / res["median_cpu_s"][OURS_FP32],
        # Each side's fastest eager configuration (may compare bf16 with float32), and ours-best vs HF default.
        f"train_vs_hf_best{suffix}": tps[ours_best] / tps[hf_best],
        f"train_vs_hf_default{suffix}": tps[ours_best] / tps[hf_fp32],
        f"flops_per_token{suffix}": fpt,
        f"matmul_fp32_flops{suffix}": res["matmul_fp32_flops"],
        f"train_flops{suffix}": fpt * tps[OURS_FP32],
        # Training FLOP/s over the FLOP/s of a 2048^3 torch.mm of the same precision, measured interleaved.
        f"train_flops_vs_matmul_peak{suffix}": fpt * tps[OURS_FP32] / res["matmul_fp32_flops"],
    })
    if "ours:bf16" in tps:
        f[f"train_flops_bf16{suffix}"] = fpt * tps["ours:bf16"]
        if hf_bf16 is not None:
            f[f"train_vs_hf_bf16{suffix}"] = tps["ours:bf16"] / tps[hf_bf16]
        if "matmul_bf16_flops" in res:
            f[f"matmul_bf16_flops{suffix}"] = res["matmul_bf16_flops"]
            f[f"train_flops_vs_bf16_matmul_peak{suffix}"] = fpt * tps["ours:bf16"] / res["matmul_bf16_flops"]
    if "ours:bf16:compile" in tps and "hf-sdpa:bf16:compile" in tps:
        f[f"train_vs_hf_compiled{suffix}"] = tps["ours:bf16:compile"] / tps["hf-sdpa:bf16:compile"]
    return f


def print_variants(res: dict, skipped: dict, emulated: dict) -> None:
    """One shape's variants: median step, the rounds it is of, tokens/s; what was skipped or emulated, and why."""
    rows = [(name, res["median_s"][name], len(res["runs"][name]["wall"]), res.get("tokens_per_s", {}).get(name, ""),
             f"emulated: {emulated[name]}" if name in emulated else "")
            for name in res["runs"]]
    rows += [(name, "", 0, "", f"skipped: {why}") for name, why in skipped.items()]
    print_table(rows, headers=(f"{res['shape']} variant", "median s", "rounds", "tokens/s", ""))


def run(quick: bool = False, log=print, budget_s: float | None = None) -> dict:
    budget = time_budget(quick, budget_s)
    torch.set_num_threads(THREADS)
    # A fresh inductor cache, so compile_s is the honest cold-start cost (later runs of a real job reuse it).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
    figures: dict = {f"machine_{k}": v for k, v in machine_info().items()}
    figures["train_peak_rss_method"] = ("VmHWM of a fresh subprocess per variant: import torch+transformers, "
                                        "build the model, run 3 training steps")
    figures["train_budget_s"] = budget.seconds
    plan, skipped, emulated = precision_plan(_plan(quick), quick, bf16_emulated("cpu"))
    for name, why in skipped.items():
        log(f"bench_train: skipped {name}: {why}")
    for name, why in emulated.items():
        log(f"bench_train: {name} is emulated ({why}): timed in {EMULATED_ROUNDS} rounds")
    # The loss check first: a fixed cost, so that the timed rounds fill what is left of the budget.
    if "bf16_check" not in skipped:
        log("bench_train: bf16 vs float32 loss check (tiny preset)")
        start = time.perf_counter()
        figures.update({f"train_{k}": v for k, v in bf16_loss_check(steps=10 if quick else 60).items()})
        figures["train_bf16_check_s"] = time.perf_counter() - start
    raw = {}
    for shape, (specs, repeats, warmup) in plan.items():
        log(f"bench_train: {shape} shape {SHAPES[shape]}, {len(specs)} variants, up to {repeats} interleaved repeats"
            + (f" within a budget of {budget.seconds:g} s ({budget.spent():.0f} s spent)" if budget.seconds else ""))
        res = measure([Variant.parse(s) for s in specs], shape, repeats, warmup, log=log,
                      bf16_matmul="matmul_bf16" not in skipped, budget=budget,
                      fewer_rounds={name: EMULATED_ROUNDS for name in emulated})
        raw[shape] = res
        print_variants(res, skipped, emulated)
        # The headline figures (no suffix) come from GPT-2 124M, or from the tiny shape when it is the only one.
        suffix = "" if shape == "124m" or quick else "_tiny"
        shape_figures = _shape_figures(res, specs, suffix)
        figures.update(shape_figures)
        mem_specs = [OURS_FP32, shape_figures[f"train_ours_best{suffix}"],
                     max((s for s in specs if s.startswith("hf") and ":fp32" in s and ":compile" not in s),
                         key=res["tokens_per_s"].get),
                     shape_figures[f"train_hf_best{suffix}"]]
        if quick:
            mem_specs = []
        for spec in dict.fromkeys(mem_specs):
            log(f"  [{shape}] peak memory of {spec} (subprocess)")
            for key, value in memory(spec, shape).items():
                figures[f"train_{key}{suffix}[{spec}]"] = value
    figures["train_headline_shape"] = "tiny" if quick else "124m"
    figures["skipped"], figures["emulated"] = skipped, emulated
    figures["train_raw"] = raw
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", help="comma-separated variant specs: run only these (ad hoc)")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=1)
    add_budget_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    if not args.variants:
        figures = run(quick=args.quick, budget_s=args.budget_s)
        print_figures(figures, "bench_train")
        return
    variants = [Variant.parse(s) for s in args.variants.split(",")]
    bf16_reason = bf16_emulated("cpu")
    if bf16_reason and any(v.dtype == "bf16" for v in variants):
        print(f"note: bf16 is emulated here ({bf16_reason}); its variants run several times slower than float32")
    res = measure(variants, args.shape, args.repeats, args.warmup, budget=time_budget(args.quick, args.budget_s))
    base = variants[0].name
    rows = []
    for name, timing in res["runs"].items():
        wall, cpu = timing["wall"], timing["cpu"]
        paired = median([b / a for a, b in zip(wall, res["runs"][base]["wall"])])
        rows.append((name, median(wall), len(wall), res["tokens_per_s"].get(name, float("nan")),
                     median(res["runs"][base]["wall"]) / median(wall), paired,
                     min(res["runs"][base]["wall"]) / min(wall), median(cpu),
                     median(res["runs"][base]["cpu"]) / median(cpu), median(timing["faults"]) * PAGE_MB,
                     res["first_step_s"].get(name, float("nan"))))
    print_table(rows, headers=("variant", "median_s", "rounds", "tok/s", f"speed vs {base}", "paired", "min-ratio",
                               "cpu_s", "cpu-ratio", "faulted_MB", "first_s"))
    print(f"matmul fp32 {res['matmul_fp32_flops'] / 1e9:.1f} GFLOP/s, bf16 {res['matmul_bf16_flops'] / 1e9:.1f}; "
          f"flops/token {res['flops_per_token']:.4g}")
    for name in res["runs"]:
        print(name, "wall", [round(t, 3) for t in res["runs"][name]["wall"]])


if __name__ == "__main__":
    main()
