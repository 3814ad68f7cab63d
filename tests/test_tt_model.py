"""Trajectory Transformer model: parity with transformers 4.30, exact cached decoding, checkpoints both ways."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from seqrl import SeqrlError, TrajectoryTransformerConfig, TrajectoryTransformerModel
from seqrl.planners.trajectory import kernels
from seqrl.planners.trajectory.kernels import QUERY_BLOCK, Linear, blocked_attention, dropout, keep_mask
from seqrl.planners.trajectory.model import KVCache, select_cache

try:
    import transformers
except ImportError:  # the parity tests skip; the kernels' tests still run
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="needs transformers, the parity reference")

SMALL = dict(
    vocab_size=20, block_size=48, observation_dim=3, action_dim=2, transition_dim=7, n_layer=2, n_head=4, n_embd=32
)
TRANSITION = SMALL["transition_dim"]

ISSUE_DEFAULTS = dict(
    vocab_size=100, action_weight=5, reward_weight=1, value_weight=1, block_size=249, action_dim=6,
    observation_dim=17, transition_dim=25, n_layer=4, n_head=4, n_embd=128, embd_pdrop=0.1, attn_pdrop=0.1,
    resid_pdrop=0.1, learning_rate=6e-4, max_position_embeddings=512, initializer_range=0.02,
    layer_norm_eps=1e-12, kaiming_initializer_range=1, use_cache=True, pad_token_id=1, bos_token_id=50256,
    eos_token_id=50256,
)  # fmt: skip


@pytest.fixture(scope="module")
def hf_model():
    """transformers' model on SMALL with every parameter random (its init leaves pos_emb at zero)."""
    if transformers is None:
        pytest.skip("needs transformers, the parity reference")
    torch.manual_seed(0)
    model = transformers.TrajectoryTransformerModel(transformers.TrajectoryTransformerConfig(**SMALL, action_weight=3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture(scope="module")
def model(hf_model):
    """seqrl's model holding hf_model's weights."""
    ours = TrajectoryTransformerModel(TrajectoryTransformerConfig(**SMALL, action_weight=3))
    ours.load_state_dict({key: value for key, value in hf_model.state_dict().items() if not key.endswith("attn.mask")})
    return ours.eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """Random tokens in [0, vocab_size], the stop token included."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, SMALL["vocab_size"] + 1, (batch, length), generator=generator)


@needs_transformers
def test_config_defaults_match_the_issue_and_transformers():
    ours = dataclasses.asdict(TrajectoryTransformerConfig())
    assert ours == ISSUE_DEFAULTS
    theirs = transformers.TrajectoryTransformerConfig().to_dict()
    assert {key: theirs[key] for key in ours} == ours


@needs_transformers
def test_config_round_trips_through_transformers(tmp_path):
    config = TrajectoryTransformerConfig(**SMALL, value_weight=2.5, layer_norm_eps=1e-6)
    config.save_pretrained(tmp_path)
    theirs = transformers.TrajectoryTransformerConfig.from_pretrained(tmp_path)
    assert theirs.model_type == "trajectory_transformer"
    theirs.save_pretrained(tmp_path / "back")
    assert TrajectoryTransformerConfig.from_pretrained(tmp_path / "back") == config


def test_inconsistent_config_is_rejected():
    with pytest.raises(SeqrlError, match="transition_dim"):
        TrajectoryTransformerConfig(observation_dim=3, action_dim=2, transition_dim=8)


@torch.no_grad()
def test_outputs_match_transformers(hf_model, model):
    trajectories = tokens(3, 2 * TRANSITION + 4)
    theirs = hf_model(trajectories, use_cache=True, output_hidden_states=True, output_attentions=True, return_dict=True)
    ours = model(trajectories, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)
    for mine, reference in zip(ours.attentions, theirs.attentions, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-5)
    for (key, value), (their_key, their_value) in zip(ours.past_key_values, theirs.past_key_values, strict=True):
        torch.testing.assert_close(key, their_key)
        torch.testing.assert_close(value, their_value)


@torch.no_grad()
def test_tuple_output_has_transformers_order(model):
    trajectories, targets = tokens(2, 13), tokens(2, 13, seed=2)
    loss, logits, cache, hidden = model(trajectories, targets=targets, output_hidden_states=True, return_dict=False)
    assert loss.ndim == 0 and logits.shape == (2, 13, SMALL["vocab_size"] + 1)
    assert len(cache) == len(hidden) - 1 == SMALL["n_layer"]
    assert model(trajectories, use_cache=False, return_dict=False)[0].shape == logits.shape


@torch.no_grad()
@pytest.mark.parametrize("masked", [False, True])
def test_loss_matches_transformers(hf_model, model, masked):
    # transformers only weights the loss for windows of whole transitions minus one token, as in training
    trajectories, targets = tokens(4, 3 * TRANSITION - 1), tokens(4, 3 * TRANSITION - 1, seed=2)
    mask = (torch.rand(targets.shape, generator=torch.Generator().manual_seed(3)) > 0.3).float()
    mask = mask if masked else torch.ones_like(mask)  # transformers requires a mask with targets
    theirs = hf_model(trajectories, targets=targets, attention_mask=mask, return_dict=True).loss
    ours = model(trajectories, targets=targets, attention_mask=mask if masked else None).loss
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_token_by_token_decoding_equals_full_forward(model):
    trajectories = tokens(2, SMALL["block_size"])
    full = model(trajectories).logits
    cache, steps = None, []
    for position in range(trajectories.shape[1]):
        output = model(trajectories[:, position : position + 1], past_key_values=cache)
        cache = output.past_key_values
        steps.append(output.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0][0].shape == (2, SMALL["n_head"], SMALL["block_size"], SMALL["n_embd"] // SMALL["n_head"])


@torch.no_grad()
@pytest.mark.parametrize("prefix", [1, TRANSITION - 1, TRANSITION, TRANSITION + 3, 2 * TRANSITION + 5])
def test_prefix_then_chunks_equals_full_forward(model, prefix):
    trajectories = tokens(3, 40)
    full = model(trajectories).logits
    output = model(trajectories[:, :prefix])
    pieces, cache, start = [output.logits], output.past_key_values, prefix
    for size in (TRANSITION + 2, 3, 1, 40):  # chunks that straddle transition boundaries
        chunk = trajectories[:, start : start + size]
        if chunk.shape[1] == 0:
            break
        output = model(chunk, past_key_values=cache)
        pieces.append(output.logits)
        cache, start = output.past_key_values, start + chunk.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_preallocated_cache_decodes_as_the_full_forward(model):
    trajectories = tokens(3, 40)
    full = model(trajectories).logits
    cache, start = KVCache(model, rows=4, tokens=40), 0
    for size in (TRANSITION + 2, 1, 3, 1, 40):  # chunks that straddle transition boundaries, and single tokens
        chunk = trajectories[:, start : start + size]
        start += chunk.shape[1]
        torch.testing.assert_close(model.decode(chunk, cache), full[:, start - 1], atol=1e-5, rtol=1e-5)
        if start == 2 * TRANSITION:  # fork: row 3 continues row 1's history
            cache.copy_rows(torch.tensor([3]), torch.tensor([1]))
            trajectories, full = trajectories[[0, 1, 2, 1]], full[[0, 1, 2, 1]]
    head_dim = SMALL["n_embd"] // SMALL["n_head"]
    assert cache.length == 40 and cache.layers[0].shape == (2, 4, SMALL["n_head"], 40, head_dim)
    with pytest.raises(SeqrlError, match="larger cache"):
        model.decode(trajectories[:, :1], cache)


@torch.no_grad()
def test_selected_cache_continues_the_selected_rows(model):
    trajectories = tokens(3, 2 * TRANSITION + 2)
    cache = model(trajectories[:, :-3]).past_key_values
    rows = torch.tensor([2, 0, 2, 2])  # fork row 2 into three beams
    continued = model(trajectories[rows, -3:], past_key_values=select_cache(cache, rows)).logits
    torch.testing.assert_close(continued, model(trajectories[rows]).logits[:, -3:], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_cached_loss_weights_follow_absolute_positions(model):
    trajectories, targets = tokens(2, 3 * TRANSITION - 1), tokens(2, 3 * TRANSITION - 1, seed=2)
    full = model(trajectories, targets=targets).loss
    split = TRANSITION + 2
    cache = model(trajectories[:, :split]).past_key_values
    head = model(trajectories[:, :split], targets=targets[:, :split]).loss * split
    tail = model(trajectories[:, split:], past_key_values=cache, targets=targets[:, split:]).loss
    torch.testing.assert_close((head + tail * (targets.shape[1] - split)) / targets.shape[1], full)


@torch.no_grad()
def test_no_position_attends_to_value_tokens(model):
    trajectories = tokens(1, 4 * TRANSITION)
    value_position = 2 * TRANSITION - 1
    changed = trajectories.clone()
    changed[0, value_position] = (changed[0, value_position] + 1) % SMALL["vocab_size"]
    difference = (model(trajectories).logits - model(changed).logits).abs().amax(dim=-1)[0]
    assert difference[value_position] > 1e-3  # its own input still reaches it through the residual stream
    assert difference[torch.arange(4 * TRANSITION) != value_position].max() < 1e-6
    observation_position = 2 * TRANSITION
    changed = trajectories.clone()
    changed[0, observation_position] = (changed[0, observation_position] + 1) % SMALL["vocab_size"]
    difference = (model(trajectories).logits - model(changed).logits).abs().amax(dim=-1)[0]
    assert difference[:observation_position].max() < 1e-6 and difference[observation_position:].min() > 1e-4


def test_block_size_is_enforced_with_the_cache(model):
    cache = model(tokens(1, SMALL["block_size"] - 2)).past_key_values
    model(tokens(1, 2), past_key_values=cache)
    with pytest.raises(SeqrlError, match="block size"):
        model(tokens(1, 3), past_key_values=cache)


@torch.no_grad()
@pytest.mark.parametrize("safe_serialization", [False, True])
def test_loads_transformers_checkpoints(hf_model, tmp_path, safe_serialization):
    hf_model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    loaded = TrajectoryTransformerModel.from_pretrained(tmp_path)
    assert not loaded.training and loaded.config.action_weight == 3
    trajectories = tokens(2, 30)
    torch.testing.assert_close(loaded(trajectories).logits, hf_model(trajectories)[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_transformers_loads_our_checkpoints(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    theirs, info = transformers.TrajectoryTransformerModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    trajectories = tokens(2, 30)
    torch.testing.assert_close(theirs.eval()(trajectories)[0], model(trajectories).logits, atol=1e-5, rtol=1e-5)


def test_bad_checkpoint_directories_give_one_line_errors(model, tmp_path):
    model.save_pretrained(tmp_path / "good")
    config = json.loads((tmp_path / "good" / "config.json").read_text())

    def variant(name: str, config_changes: dict | None, weights: bool = True):
        directory = tmp_path / name
        directory.mkdir()
        if config_changes is not None:
            (directory / "config.json").write_text(json.dumps({**config, **config_changes}))
        if weights:
            (directory / "model.safetensors").write_bytes((tmp_path / "good" / "model.safetensors").read_bytes())
        return directory

    cases = {
        "config.json is missing": variant("no_config", None),
        "not a 'trajectory_transformer'": variant("wrong_type", {"model_type": "decision_transformer"}),
        "has shape": variant("wrong_shape", {"vocab_size": 21}),
        "do not fit": variant("wrong_layers", {"n_layer": 3}),
        "has no model.safetensors": variant("no_weights", {}, weights=False),
        "not found": tmp_path / "absent",
    }
    for message, directory in cases.items():
        with pytest.raises(SeqrlError, match=message) as error:
            TrajectoryTransformerModel.from_pretrained(directory)
        assert "\n" not in str(error.value)


def test_keep_masks_drop_a_fraction_p_independently_and_follow_the_seed():
    torch.manual_seed(0)
    mask = keep_mask((1000, 1000), 0.1, torch.device("cpu"))
    assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) == {0, 1}
    dropped = 1 - mask.double()
    assert abs(dropped.mean().item() - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 1e6)
    both = (dropped[:, 0::2] * dropped[:, 1::2]).mean().item()  # neighbours come from the same 64 random bits
    assert abs(both - 0.01) < 5 * math.sqrt(0.01 * 0.99 / 5e5)
    torch.manual_seed(0)
    assert torch.equal(keep_mask((1000, 1000), 0.1, torch.device("cpu")), mask)


def test_dropout_zeroes_a_fraction_p_and_scales_the_rest():
    x = (torch.rand(400, 500, dtype=torch.float64) + 1).requires_grad_()
    y = dropout(x, 0.25, training=True)
    kept = y != 0
    assert abs(kept.double().mean().item() - 0.75) < 5 * math.sqrt(0.25 * 0.75 / 2e5)
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.double() / 0.75)
    assert dropout(x, 0.25, training=False) is x


@pytest.mark.parametrize("length, cached", [(2 * QUERY_BLOCK + 7, 0), (QUERY_BLOCK + 5, 2 * TRANSITION + 3)])
def test_blocked_attention_is_masked_softmax_attention_with_dropout(length, cached):
    generator = torch.Generator().manual_seed(0)
    total = cached + length
    query = torch.randn(2, 3, length, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    key, value = (
        torch.randn(2, 3, total, 8, dtype=torch.float64, generator=generator, requires_grad=True) for _ in "kv"
    )
    grad = torch.randn(2, 3, length, 8, dtype=torch.float64, generator=generator)
    positions, key_positions = torch.arange(cached, total), torch.arange(total)
    allowed = (key_positions <= positions[:, None]) & (key_positions % TRANSITION != TRANSITION - 1)

    torch.manual_seed(1)
    attended = blocked_attention(query, key, value, allowed, 0.3)
    grads = torch.autograd.grad(attended, (query, key, value), grad)
    torch.manual_seed(1)  # the same keep-masks: one per block of queries, over the keys up to the block's last query
    keep = torch.zeros(6, length, total, dtype=torch.uint8)
    for first in range(0, length, QUERY_BLOCK):
        last = min(first + QUERY_BLOCK, length)
        keep[:, first:last, : cached + last] = keep_mask((6, last - first, cached + last), 0.3, torch.device("cpu"))
    keep = keep.view(2, 3, length, total)
    scores = (query @ key.transpose(-2, -1) / math.sqrt(8)).masked_fill(~allowed, float("-inf"))
    expected = (scores.softmax(dim=-1) * keep / 0.7) @ value
    torch.testing.assert_close(attended, expected)
    for mine, reference in zip(grads, torch.autograd.grad(expected, (query, key, value), grad), strict=True):
        torch.testing.assert_close(mine, reference)


def test_training_gradients_match_transformers_without_dropout(hf_model):
    # in training mode, with grads: the oneDNN linears and their backward, against transformers' plain modules
    no_dropout = dict(SMALL, action_weight=3, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    theirs = transformers.TrajectoryTransformerModel(transformers.TrajectoryTransformerConfig(**no_dropout))
    theirs.load_state_dict(hf_model.state_dict())
    ours = TrajectoryTransformerModel(TrajectoryTransformerConfig(**no_dropout))
    ours.load_state_dict({key: value for key, value in hf_model.state_dict().items() if not key.endswith("attn.mask")})
    trajectories, targets = tokens(4, 3 * TRANSITION - 1), tokens(4, 3 * TRANSITION - 1, seed=2)
    mask = torch.ones(targets.shape)
    ours.train()(trajectories, targets=targets, attention_mask=mask).loss.backward()
    theirs.train()(trajectories, targets=targets, attention_mask=mask, return_dict=True).loss.backward()
    their_grads = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, their_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_training_dropout_follows_the_seed(model):
    trained = TrajectoryTransformerModel(model.config)
    trained.load_state_dict(model.state_dict())
    trajectories = tokens(2, SMALL["block_size"])
    losses = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        losses.append(trained.train()(trajectories, targets=trajectories).loss)
    assert losses[0] == losses[1] and losses[0] != losses[2]
    assert losses[0] != trained.eval()(trajectories, targets=trajectories).loss


def test_onednn_linear_is_checked_against_f_linear_and_falls_back(monkeypatch):
    layer, x = Linear(8, 4), torch.randn(6, 8, requires_grad=True)

    def gradients() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(layer(x).square().sum(), (x, layer.weight, layer.bias))

    expected = torch.autograd.grad(F.linear(x, layer.weight, layer.bias).square().sum(), (x, layer.weight, layer.bias))
    kernels.onednn_linear_works.cache_clear()
    try:
        for mine, reference in zip(gradients(), expected, strict=True):  # oneDNN's op if it works on this torch
            torch.testing.assert_close(mine, reference)

        def wrong(x, weight, bias, *args):  # a private op whose meaning changed
            return torch.zeros(x.shape[0], weight.shape[0])

        def missing(*args):  # or whose signature did
            raise RuntimeError("_linear_pointwise() expected 7 arguments")

        for replacement in (wrong, missing):
            monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", replacement, raising=False)
            kernels.onednn_linear_works.cache_clear()
            assert not kernels.onednn_linear_works()
            for mine, reference in zip(gradients(), expected, strict=True):
                torch.testing.assert_close(mine, reference)
    finally:
        monkeypatch.undo()
        kernels.onednn_linear_works.cache_clear()
