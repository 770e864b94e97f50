"""The GPT model: causality, KV cache == full recompute, context limit, weight tying, FLOP accounting,
hidden states for other heads, logits at the trained positions only."""

import pytest
import torch
import torch.nn.functional as F

from llm.checkpoint import load_model, save_model
from llm.generate import SamplingSettings, generate_tokens
from llm.model import GPT, GPTConfig, Linear, linear

CONFIG = GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_changing_a_future_token_never_changes_earlier_logits(model):
    ids = random_ids(2, 20)
    logits, _ = model(ids)
    for position in (0, 7, 19):
        changed = ids.clone()
        changed[:, position] = (changed[:, position] + 1) % CONFIG.vocab_size
        changed_logits, _ = model(changed)
        torch.testing.assert_close(changed_logits[:, :position], logits[:, :position], rtol=0, atol=1e-6)
        # ...while the changed position itself does see the change (the test can fail).
        assert not torch.allclose(changed_logits[:, position], logits[:, position], atol=1e-4)


@torch.no_grad()
def test_hidden_states_are_what_the_head_reads(model):
    ids = random_ids(2, 12, seed=4)
    hidden = model.hidden_states(ids)
    assert hidden.shape == (2, 12, CONFIG.n_embd)
    torch.testing.assert_close(model.lm_head(hidden), model(ids)[0], rtol=0, atol=0)
    cache = model.new_kv_cache(2)
    first, rest = model.hidden_states(ids[:, :5], cache), model.hidden_states(ids[:, 5:], cache)
    assert cache.length == 12
    torch.testing.assert_close(torch.cat([first, rest], dim=1), hidden, rtol=0, atol=1e-5)


def test_target_logits_only_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    ids = random_ids(3, 16, seed=5)
    targets = random_ids(3, 16, seed=6)
    targets[0, :10] = -100
    targets[2, 4:] = -100
    kept = targets.reshape(-1)[targets.reshape(-1) != -100]

    full_logits, full_loss = model(ids, targets)
    expected_rows = full_logits.detach().reshape(-1, CONFIG.vocab_size)[targets.reshape(-1) != -100].clone()
    full_loss.backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    logits, loss = model(ids, targets, target_logits_only=True)
    assert logits.shape == (kept.numel(), CONFIG.vocab_size)
    torch.testing.assert_close(logits.detach(), expected_rows, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, full_loss, rtol=0, atol=1e-6)
    loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected_grads[name], rtol=1e-4, atol=1e-7, msg=name)


@torch.no_grad()
def test_kv_cache_logits_equal_full_recompute_for_prefill_single_steps_and_chunks(model):
    ids = random_ids(3, 24, seed=1)
    full, _ = model(ids)
    cache = model.new_kv_cache(3, 24)
    pieces = [(0, 9), (9, 10), (10, 11), (11, 12), (12, 17), (17, 18), (18, 24)]  # prefill, steps, chunks
    for start, end in pieces:
        logits, _ = model(ids[:, start:end], kv_cache=cache)
        assert cache.length == end
        torch.testing.assert_close(logits, full[:, start:end], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_last_logits_only_is_the_last_row_of_the_full_logits(model):
    ids = random_ids(2, 12, seed=4)
    full, _ = model(ids)
    last, _ = model(ids, last_logits_only=True)
    assert last.shape == (2, 1, CONFIG.vocab_size)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)
    cache = model.new_kv_cache(2, 12)
    model(ids[:, :7], kv_cache=cache, last_logits_only=True)
    chunk, _ = model(ids[:, 7:], kv_cache=cache, last_logits_only=True)
    torch.testing.assert_close(chunk, full[:, -1:], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_expanded_cache_continues_each_copy_like_the_original(model):
    ids = random_ids(1, 10, seed=2)
    cache = model.new_kv_cache(1, 12)
    model(ids, kv_cache=cache)
    cache.expand(3)
    next_ids = torch.tensor([[1], [2], [3]])
    logits, _ = model(next_ids, kv_cache=cache)
    for row in range(3):
        reference, _ = model(torch.cat([ids, next_ids[row:row + 1]], dim=1))
        torch.testing.assert_close(logits[row, -1], reference[0, -1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_greedy_generation_with_kv_cache_equals_greedy_without_cache(model):
    prompt = random_ids(1, 5, seed=3)[0].tolist()
    new_tokens = 20
    # Reference: recompute the whole sequence at every step, no cache.
    sequence = list(prompt)
    for _ in range(new_tokens):
        logits, _ = model(torch.tensor([sequence]))
        sequence.append(int(logits[0, -1].argmax()))
    settings = SamplingSettings(max_new_tokens=new_tokens, temperature=0.0)
    cached = [int(step[0]) for step in generate_tokens(model, prompt, settings)]
    assert cached == sequence[len(prompt):]
    assert len(set(cached)) > 1  # a degenerate constant output would make the comparison weak


def test_more_tokens_than_block_size_is_an_error(model):
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(random_ids(1, CONFIG.block_size + 1))
    cache = model.new_kv_cache(1, CONFIG.block_size + 4)
    with torch.no_grad():
        model(random_ids(1, CONFIG.block_size), kv_cache=cache)  # exactly full is fine
        with pytest.raises(ValueError, match="exceeds block_size"):
            model(random_ids(1, 1), kv_cache=cache)


def test_tied_weights_are_one_tensor_trained_together_and_survive_save_load(tmp_path):
    torch.manual_seed(0)
    tied = GPT(CONFIG)
    assert tied.lm_head.weight is tied.wte.weight
    untied = GPT(GPTConfig(**{**CONFIG.to_dict(), "tie_weights": False}))
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + CONFIG.vocab_size * CONFIG.n_embd

    # The loss gradient reaches the shared matrix through both the input and the output side.
    ids = random_ids(2, 8)
    _, loss = tied(ids, targets=ids)
    loss.backward()
    assert tied.wte.weight.grad is not None and tied.wte.weight.grad.abs().sum() > 0

    save_model(tied, tmp_path, "gpt2")
    loaded, _ = load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.wte.weight
    torch.testing.assert_close(loaded.wte.weight, tied.wte.weight, rtol=0, atol=0)


def test_flops_per_token_matches_counted_matmul_flops_of_a_training_step():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64)
    model = GPT(config)
    ids = torch.randint(0, config.vocab_size, (2, config.block_size))
    counter = FlopCounterMode(display=False)
    # The math backend spells attention as matmuls the counter sees (CPU flash attention is not counted).
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, loss = model(ids, targets=ids)
        loss.backward()
    counted_per_token = counter.get_total_flops() / ids.numel()
    estimate = model.flops_per_token()
    # 6N counts biases and LayerNorm parameters, which do no matmul work: a few percent high at most.
    assert counted_per_token <= estimate <= 1.05 * counted_per_token, (estimate, counted_per_token)
    # The attention term grows with the sequence length.
    assert model.flops_per_token(seq_len=64) - model.flops_per_token(seq_len=32) == 12 * 2 * 64 * 32


@pytest.mark.parametrize("rows, width", [(1, 48), (1, 400), (2, 48), (3, 400), (8, 48), (9, 400), (40, 48)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_few_rows_linear_equals_f_linear_values_and_gradients(rows, width, with_bias):
    # 2-8 rows (and 1 wide row) take the (W @ x^T)^T path, the rest plain F.linear: all give F.linear's answer.
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(300, width, generator=generator, requires_grad=True)
    bias = torch.randn(300, generator=generator, requires_grad=True) if with_bias else None
    x = torch.randn(1, rows, width, generator=generator, requires_grad=True)
    out = linear(x, weight, bias)
    expected = torch.nn.functional.linear(x, weight, bias)
    assert out.shape == expected.shape == (1, rows, 300)
    # Each output sums `width` float32 products of unit-size numbers; the two routines add them in different
    # orders (which also depends on the thread count), so near-zero outputs may differ by ~width * 6e-8.
    # A wrong result would differ by O(1).
    tolerance = dict(rtol=1e-5, atol=1e-6 * width)
    torch.testing.assert_close(out, expected, **tolerance)
    upstream = torch.randn(out.shape, generator=generator)
    grads = torch.autograd.grad(out, [x, weight], upstream)
    expected_grads = torch.autograd.grad(expected, [x, weight], upstream)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **tolerance)


def test_linear_module_keeps_nn_linear_state_dict_and_falls_back_under_bf16_autocast():
    layer = Linear(8, 4)
    assert isinstance(layer, torch.nn.Linear) and set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast's F.linear, not the float32 few-rows path
    assert layer(x).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad_scale", [1.0, -2.5])
def test_chunked_cross_entropy_equals_f_cross_entropy_value_and_gradient(dtype, grad_scale):
    from llm.model import cross_entropy

    generator = torch.Generator().manual_seed(0)
    # Enough rows for several chunks, a vocabulary that is not a power of two, and two ignored targets.
    logits = (torch.randn(70, 5003, generator=generator) * 3).to(dtype)
    targets = torch.randint(0, 5003, (70,), generator=generator)
    targets[[3, 41]] = -100
    ours_input = logits.clone().requires_grad_(True)
    reference_input = logits.clone().requires_grad_(True)
    ours = cross_entropy(ours_input, targets)
    reference = F.cross_entropy(reference_input.float(), targets, ignore_index=-100)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    (ours * grad_scale).backward()
    (reference * grad_scale).backward()
    tolerance = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-5)
    torch.testing.assert_close(ours_input.grad, reference_input.grad, **tolerance)
    assert ours_input.grad[3].abs().max() == 0  # ignored rows get no gradient


def test_chunked_cross_entropy_with_every_target_ignored_is_nan_like_f_cross_entropy():
    from llm.model import cross_entropy

    logits = torch.randn(4, 10, requires_grad=True)
    assert torch.isnan(cross_entropy(logits, torch.full((4,), -100)))


def test_another_reader_of_the_logits_gets_their_values_or_fails_loudly_never_silently_wrong():
    from llm.model import cross_entropy

    inputs, targets = torch.randn(5, 8), torch.randint(0, 16, (5,))
    weight = torch.randn(8, 16, requires_grad=True)

    def weight_grad(loss_fn, ce):
        weight.grad = None
        loss_fn(inputs @ weight, ce).backward()
        return weight.grad

    # An extra term built after the loss: autograd runs its backward first, while the logits are intact.
    after = lambda logits, ce: ce(logits, targets) + logits.pow(2).mean()
    torch.testing.assert_close(weight_grad(after, cross_entropy), weight_grad(after, F.cross_entropy))
    # Built before the loss, it would read the logits after they became the gradient: an error, not a wrong answer.
    before = lambda logits, ce: logits.pow(2).mean() + ce(logits, targets)
    with pytest.raises(RuntimeError, match="inplace"):
        weight_grad(before, cross_entropy)
