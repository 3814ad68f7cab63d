"""Decision Transformer model: numerical parity and checkpoint exchange with transformers 4.30."""

import json

import pytest
import torch
from safetensors import safe_open
from seqrl import DecisionTransformerConfig, DecisionTransformerModel, SeqrlError

transformers = pytest.importorskip("transformers")
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning"),  # inside transformers 4.30
    pytest.mark.usefixtures("one_torch_thread"),
]


VARIANTS = [
    {},
    {"n_head": 4, "activation_function": "gelu_new", "scale_attn_by_inverse_layer_idx": True, "n_inner": 96},
    {"reorder_and_upcast_attn": True, "scale_attn_weights": False, "action_tanh": False, "n_layer": 2},
]


def make_inputs(config: DecisionTransformerConfig, batch: int = 4, length: int = 10, seed: int = 0) -> dict:
    """Random inputs with left padding of different lengths per row."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        mask[row, : row * 3] = 0  # row 0 unpadded, the others padded on the left
    return {
        "states": torch.randn(batch, length, config.state_dim, generator=g),
        "actions": torch.randn(batch, length, config.act_dim, generator=g),
        "rewards": torch.randn(batch, length, 1, generator=g),
        "returns_to_go": torch.randn(batch, length, 1, generator=g),
        "timesteps": torch.randint(0, config.max_ep_len, (batch, length), generator=g),
        "attention_mask": mask,
    }


def assert_close_where(ours: torch.Tensor, theirs: torch.Tensor, keep: torch.Tensor) -> None:
    """Equal (float32 rounding) at the positions where `keep` (B, T) is set."""
    torch.testing.assert_close(ours[keep.bool()], theirs[keep.bool()], atol=2e-6, rtol=1e-5)


def transformers_twin(model: DecisionTransformerModel, tmp_path) -> torch.nn.Module:
    """transformers' DecisionTransformerModel holding the same weights as `model`."""
    model.save_pretrained(tmp_path / "ours")
    return transformers.DecisionTransformerModel.from_pretrained(tmp_path / "ours").eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_transformers(variant, tmp_path):
    torch.manual_seed(0)
    config = DecisionTransformerConfig(state_dim=5, act_dim=3, hidden_size=32, max_ep_len=50, **variant)
    ours = DecisionTransformerModel(config).eval()
    theirs = transformers_twin(ours, tmp_path)
    inputs = make_inputs(config)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        expected = theirs(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)
        for output_attentions in (False, True):  # fused attention, and the explicit path that returns weights
            got = ours(**inputs, output_hidden_states=True, output_attentions=output_attentions)
            for name in ("state_preds", "action_preds", "return_preds"):
                assert_close_where(getattr(got, name), getattr(expected, name), mask)
            token_mask = mask.repeat_interleave(3, dim=1)
            assert_close_where(got.last_hidden_state, expected.last_hidden_state, token_mask)
            assert len(got.hidden_states) == len(expected.hidden_states) == config.n_layer + 1
            for mine, hf in zip(got.hidden_states, expected.hidden_states):
                assert_close_where(mine, hf, token_mask)
        assert len(got.attentions) == config.n_layer
        for mine, hf in zip(got.attentions, expected.attentions):  # (B, nh, 3T, 3T): rows of real query tokens
            assert_close_where(mine.transpose(1, 2), hf.transpose(1, 2), token_mask)
        last = ours.last_action(inputs["states"], inputs["actions"], inputs["returns_to_go"], inputs["timesteps"], mask)
        torch.testing.assert_close(last, expected.action_preds[:, -1], atol=2e-6, rtol=1e-5)
        tuple_out = ours(**inputs, return_dict=False)
    assert len(tuple_out) == 3
    torch.testing.assert_close(tuple_out[1], got.action_preds)


def test_padding_does_not_leak_into_real_positions():
    torch.manual_seed(1)
    config = DecisionTransformerConfig(state_dim=4, act_dim=2, hidden_size=16, max_ep_len=20)
    model = DecisionTransformerModel(config).eval()
    inputs = make_inputs(config, batch=2, length=6)
    inputs["attention_mask"][:] = torch.tensor([0, 0, 1, 1, 1, 1])
    changed = {key: value.clone() for key, value in inputs.items()}
    changed["states"][:, :2] += 100.0
    with torch.no_grad():
        a = model(**inputs).action_preds[:, 2:]
        b = model(**changed).action_preds[:, 2:]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("safe_serialization", [False, True])
def test_loads_transformers_checkpoint(tmp_path, safe_serialization):
    torch.manual_seed(2)
    hf_config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000, n_head=2)
    theirs = transformers.DecisionTransformerModel(hf_config).eval()
    theirs.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    ours = DecisionTransformerModel.from_pretrained(tmp_path)
    assert ours.config == DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=1000, n_head=2)
    inputs = make_inputs(ours.config)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).action_preds, theirs(**inputs).action_preds, atol=2e-6, rtol=1e-5)


def test_loads_legacy_bin_with_mask_buffers(tmp_path):
    """Hub checkpoints such as edbeeching/decision-transformer-gym-hopper-medium carry attn.bias buffers."""
    torch.manual_seed(3)
    theirs = transformers.DecisionTransformerModel(transformers.DecisionTransformerConfig(state_dim=11, act_dim=3))
    state = theirs.state_dict()
    for layer in range(theirs.config.n_layer):
        state[f"encoder.h.{layer}.attn.bias"] = torch.ones(1, 1, 1024, 1024, dtype=torch.uint8).tril()
        state[f"encoder.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    theirs.config.save_pretrained(tmp_path)
    ours = DecisionTransformerModel.from_pretrained(tmp_path)
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_saved_checkpoint_is_transformers_format(tmp_path):
    config = DecisionTransformerConfig(state_dim=6, act_dim=2, max_ep_len=100, scale_attn_by_inverse_layer_idx=True)
    ours = DecisionTransformerModel(config)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "decision_transformer"
    assert saved["architectures"] == ["DecisionTransformerModel"]
    with safe_open(tmp_path / "model.safetensors", framework="pt") as file:
        assert file.metadata() == {"format": "pt"}
        assert file.get_tensor("encoder.h.0.attn.c_attn.weight").shape == (128, 384)  # Conv1D: (in, out)
    hf_config = transformers.DecisionTransformerConfig.from_pretrained(tmp_path)
    assert hf_config.state_dim == 6 and hf_config.scale_attn_by_inverse_layer_idx
    theirs = transformers.DecisionTransformerModel.from_pretrained(tmp_path)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[key])


def test_config_defaults_match_transformers():
    ours = DecisionTransformerConfig().to_dict()
    theirs = transformers.DecisionTransformerConfig().to_dict()
    for key, value in ours.items():
        if key != "architectures":
            assert theirs[key] == value, key


def test_weight_init_follows_gpt2():
    torch.manual_seed(4)
    config = DecisionTransformerConfig(hidden_size=256, n_layer=8)
    state = DecisionTransformerModel(config).state_dict()
    assert state["encoder.h.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert state["encoder.h.0.mlp.c_proj.weight"].std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert state["embed_state.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(state["encoder.h.0.attn.c_attn.bias"] == 0) and torch.all(state["embed_ln.weight"] == 1)


def test_wrong_weights_are_rejected(tmp_path):
    DecisionTransformerModel(DecisionTransformerConfig(state_dim=6)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "state_dim": 7}))
    with pytest.raises(SeqrlError, match="state_dim|shape") as error:
        DecisionTransformerModel.from_pretrained(tmp_path)
    assert "\n" not in str(error.value)
