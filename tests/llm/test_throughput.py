"""llm/throughput.py: the probe times real steps of a shape, the fitted model recovers how a device's step time
grows with FLOPs and logits, a run's time counts its evaluations, and the fitting vocabulary follows the width."""

from __future__ import annotations

import pytest

from llm.throughput import (Probe, ProbeShape, ThroughputModel, evaluation_count, fitting_vocab_size, probe,
                            run_seconds)


def test_a_probe_times_training_steps_of_the_shape_and_leaves_the_global_rng_alone(one_torch_thread):
    import torch

    shape = ProbeShape(n_layer=1, n_head=2, n_embd=32, vocab_size=320, batch_size=2, block_size=16)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    measured = probe(shape, "cpu", steps=2)
    assert torch.equal(torch.rand(3), expected)  # a run seeded before a probe draws what it would have
    assert 0 < measured.eval_batch_seconds and 0 < measured.step_seconds < 5
    assert measured.device_name == "cpu (1 threads)"
    assert Probe.from_dict(measured.to_dict()) == measured
    lora = probe(ProbeShape(1, 2, 32, 320, 2, 16, lora_rank=4), "cpu", steps=1)
    assert lora.shape.flops_per_step < shape.flops_per_step  # no weight gradients of the frozen matrices


def _probe(shape: ProbeShape, overhead: float, per_flop: float, per_logit: float) -> Probe:
    seconds = overhead + shape.flops_per_step * per_flop + shape.logits_per_step * per_logit
    return Probe(shape, seconds, seconds / 3, "cpu (2 threads)")


def test_the_fitted_model_recovers_overhead_flops_and_logits_and_predicts_an_unprobed_shape():
    shapes = [ProbeShape(2, 2, 64, vocab, 16, 128) for vocab in (2112, 50304)] + \
             [ProbeShape(6, 6, 384, vocab, 16, 128) for vocab in (16448, 50304)]
    probes = [_probe(shape, 0.05, 1 / 50e9, 2e-9) for shape in shapes]
    model = ThroughputModel.fit(probes)
    assert model.overhead_seconds == pytest.approx(0.05, rel=1e-6)
    assert model.seconds_per_flop == pytest.approx(1 / 50e9, rel=1e-6)
    assert model.eval_share == pytest.approx(1 / 3)
    unseen = ProbeShape(4, 4, 256, 8256, 8, 256)
    assert model.step_seconds(unseen) == pytest.approx(_probe(unseen, 0.05, 1 / 50e9, 2e-9).step_seconds)
    # One probe: a rate through the origin; none: nothing to fit
    single = ThroughputModel.fit(probes[:1])
    assert single.overhead_seconds == 0 and single.step_seconds(shapes[0]) == pytest.approx(probes[0].step_seconds)
    assert ThroughputModel.fit([]) is None


def test_a_noisy_fit_never_gives_a_negative_term():
    shapes = [ProbeShape(2, 2, 64, 2112, 16, 128), ProbeShape(2, 2, 64, 50304, 16, 128),
              ProbeShape(6, 6, 384, 50304, 16, 128)]
    # the big shape measured fast (a quiet moment), the small ones slow (a busy one): a line would go negative
    probes = [Probe(shapes[0], 1.0, 0.3, "cpu"), Probe(shapes[1], 3.0, 1.0, "cpu"), Probe(shapes[2], 2.0, 0.7, "cpu")]
    model = ThroughputModel.fit(probes)
    assert model.overhead_seconds >= 0 and model.seconds_per_flop > 0 and model.seconds_per_logit >= 0


def test_a_run_counts_its_steps_and_evaluations():
    assert evaluation_count(1000, 250) == 4       # 250, 500, 750, 1000 (the last one is also the final)
    assert evaluation_count(1001, 250) == 5       # and once more after the last step
    assert evaluation_count(10, 0) == 1           # only at the end
    assert run_seconds(2.0, 0.5, max_steps=10, grad_accum=2, eval_every=5, eval_batches=4) == 10 * 2 * 2.0 + 2 * 4 * 0.5


def test_the_fitting_vocabulary_keeps_the_head_near_half_the_work():
    assert fitting_vocab_size(2, 64, 128) == 2048      # tiny
    assert fitting_vocab_size(6, 384, 128) == 16384    # small
    assert fitting_vocab_size(12, 768, 1024) == 65536  # gpt2-124m: GPT-2's own vocabulary already fits
    tiny = ProbeShape(2, 2, 64, 2048, 16, 128)
    assert 0.4 < tiny.head_share <= 0.5 < ProbeShape(2, 2, 64, 4096, 16, 128).head_share
    assert ProbeShape(2, 2, 64, 50304, 16, 128).head_share > 0.95
