"""Decision Transformer policy: agrees with transformers' example loop, batches exactly, keeps its books."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from seqrl import DecisionTransformerConfig, DecisionTransformerModel, SeqrlError
from seqrl.envs.make import make_env
from seqrl.planners import load_agent
from seqrl.planners.metadata import write_json

DIMS = {"HalfCheetah-v5": (17, 6), "Hopper-v5": (11, 3)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_checkpoint(directory, env_id="HalfCheetah-v5", statistics=True, policy=None, seed=0, **config):
    """A randomly initialised DT checkpoint for `env_id`, with seqrl.json unless `statistics` is False."""
    torch.manual_seed(seed)
    state_dim, act_dim = DIMS[env_id]
    config = {"max_ep_len": 1000, "hidden_size": 32, "n_layer": 2, "n_head": 2, **config}
    model = DecisionTransformerModel(DecisionTransformerConfig(state_dim=state_dim, act_dim=act_dim, **config))
    model.save_pretrained(directory)
    if statistics:
        rng = np.random.default_rng(seed)
        meta = {
            "kind": "dt",
            "env_id": env_id,
            "state_mean": rng.normal(size=state_dim).tolist(),
            "state_std": rng.uniform(0.5, 2.0, size=state_dim).tolist(),
            "policy": policy or {},
        }
        write_json(directory / "seqrl.json", meta)
    return model


def transformers_action(model, states, actions, returns_to_go, timesteps, context_length=20):
    """The transformers example's get_action: last K steps, left-padded with zeros and masked."""
    states, actions = states[-context_length:], actions[-context_length:]
    returns_to_go, timesteps = returns_to_go[-context_length:], timesteps[-context_length:]
    pad = context_length - len(states)

    def left_pad(x):
        return torch.cat([torch.zeros((pad, *x.shape[1:]), dtype=x.dtype), x])[None]

    mask = torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(len(states), dtype=torch.long)])[None]
    with torch.no_grad():
        _, action_preds, _ = model(
            states=left_pad(states),
            actions=left_pad(actions),
            rewards=None,
            returns_to_go=left_pad(returns_to_go),
            timesteps=left_pad(timesteps),
            attention_mask=mask,
            return_dict=False,
        )
    return action_preds[0, -1]


def test_matches_transformers_example_loop(tmp_path):
    transformers = pytest.importorskip("transformers")
    write_checkpoint(tmp_path)
    env = make_env("HalfCheetah-v5")
    agent = load_agent(tmp_path, env, target_return=6000.0)
    reference = transformers.DecisionTransformerModel.from_pretrained(tmp_path).eval()
    mean, std = agent.state_mean, agent.state_std
    observation, _ = env.reset(seed=3)
    agent.reset(seed=3)
    states = torch.tensor(observation, dtype=torch.float32)[None]
    actions, returns_to_go, timesteps = torch.zeros(0, 6), torch.tensor([[6.0]]), torch.tensor([0])
    for t in range(30):  # past K = 20, so the window slides
        actions = torch.cat([actions, torch.zeros(1, 6)])
        expected = transformers_action(reference, (states - mean) / std, actions, returns_to_go, timesteps)
        actions[-1] = expected
        action = agent.act(observation)
        np.testing.assert_allclose(action, expected.numpy(), atol=1e-5)
        observation, reward, *_ = env.step(action)
        agent.observe(reward)
        states = torch.cat([states, torch.tensor(observation, dtype=torch.float32)[None]])
        returns_to_go = torch.cat([returns_to_go, returns_to_go[-1:] - reward / 1000])
        timesteps = torch.cat([timesteps, torch.tensor([t + 1])])


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5"])
def test_batched_slots_match_single_env_policies(tmp_path, env_id):
    write_checkpoint(tmp_path, env_id)
    envs = [make_env(env_id) for _ in range(3)]
    batched = load_agent(tmp_path, envs[0])
    singles = [load_agent(tmp_path, env) for env in envs]
    observations, seeds = [], [10, 11, 12]
    for slot, env in enumerate(envs):
        observations.append(env.reset(seed=seeds[slot])[0])
        batched.reset(seed=seeds[slot], slot=slot)
        singles[slot].reset(seed=seeds[slot])
    resets = 0
    for step in range(40):
        # slot 1 sits out steps 10..14, as a finished episode waits for the others; slot 2 restarts at step 25
        slots = [s for s in range(3) if not (s == 1 and 10 <= step < 15)]
        actions = batched.act_batch(np.stack([observations[s] for s in slots]), slots)
        rewards, ended = [], []
        for action, slot in zip(actions, slots):
            np.testing.assert_allclose(action, singles[slot].act(observations[slot]), atol=1e-5, rtol=0)
            observations[slot], reward, terminated, truncated, _ = envs[slot].step(action)
            rewards.append(reward)
            singles[slot].observe(reward)
            if terminated or truncated or (slot == 2 and step == 25):
                ended.append(slot)
        batched.observe_batch(np.array(rewards), slots)
        for slot in ended:  # a new episode in this slot; the others carry on
            resets += 1
            seeds[slot] += 100
            observations[slot] = envs[slot].reset(seed=seeds[slot])[0]
            singles[slot].reset(seed=seeds[slot])
            batched.reset(seed=seeds[slot], slot=slot)
    assert resets >= 1


def test_return_to_go_timesteps_and_padding(tmp_path):
    write_checkpoint(tmp_path, max_ep_len=6)  # timesteps clip at 5
    env = make_env("HalfCheetah-v5")
    agent = load_agent(tmp_path, env, target_return=500.0, context_length=4, return_scale=100.0)
    agent.reset(slot=0)
    rewards = [10.0, -2.5, 7.0, 1.0, 3.0, 4.0, 2.0, 1.5]
    for step, reward in enumerate(rewards):
        agent.act(np.zeros(17))
        history = {name: buffer[0] for name, buffer in agent.history.items()}
        seen = min(step + 1, 4)
        assert history["mask"].tolist() == [0] * (4 - seen) + [1] * seen
        expected_returns = [(500.0 - sum(rewards[:t])) / 100.0 for t in range(step + 1)][-seen:]
        np.testing.assert_allclose(history["returns"][-seen:, 0].numpy(), expected_returns, rtol=1e-6)
        assert history["timesteps"][-seen:].tolist() == [min(t, 5) for t in range(step + 1)][-seen:]
        agent.observe(reward)
    assert agent.return_to_go[0] == pytest.approx(500.0 - sum(rewards))


def test_target_return_defaults(tmp_path):
    write_checkpoint(tmp_path / "hopper", "Hopper-v5")
    write_checkpoint(tmp_path / "cheetah", "HalfCheetah-v5", policy={"target_return": 9000.0, "return_scale": 500.0})
    hopper, cheetah = make_env("Hopper-v5"), make_env("HalfCheetah-v5")
    assert load_agent(tmp_path / "hopper", hopper).settings()["target_return"] == 3600.0  # the paper's value
    assert load_agent(tmp_path / "hopper", hopper, target_return=1800.0).settings()["target_return"] == 1800.0
    settings = load_agent(tmp_path / "cheetah", cheetah).settings()
    assert (settings["target_return"], settings["return_scale"]) == (9000.0, 500.0)  # the checkpoint's defaults
    assert settings["context_length"] == 20 and len(settings["checkpoint_digest"]) == 16


def test_plain_transformers_directory_takes_statistics_from_dataset(tmp_path):
    write_checkpoint(tmp_path / "ckpt", "Hopper-v5", statistics=False)
    rng = np.random.default_rng(0)
    episodes = [
        {
            "observations": rng.normal(3.0, 2.0, size=(50, 11)),
            "actions": rng.uniform(-1, 1, size=(50, 3)),
            "rewards": rng.normal(size=50),
            "terminals": np.zeros(50, dtype=bool),
        }
        for _ in range(2)
    ]
    with open(tmp_path / "data.pkl", "wb") as file:
        pickle.dump(episodes, file)
    agent = load_agent(tmp_path / "ckpt", make_env("Hopper-v5"), dataset=str(tmp_path / "data.pkl"))
    observations = np.concatenate([e["observations"] for e in episodes])
    np.testing.assert_allclose(agent.state_mean.numpy(), observations.mean(0), rtol=1e-5)
    np.testing.assert_allclose(agent.state_std.numpy(), observations.std(0), rtol=1e-5)
    assert agent.settings()["state_statistics"] == str(tmp_path / "data.pkl")


def test_missing_statistics_is_a_one_line_error(tmp_path):
    write_checkpoint(tmp_path, "Hopper-v5", statistics=False)
    with pytest.raises(SeqrlError, match="--dataset") as error:
        load_agent(tmp_path, make_env("Hopper-v5"))
    assert "\n" not in str(error.value)


def test_dimension_mismatch_is_a_one_line_error(tmp_path):
    write_checkpoint(tmp_path, "Hopper-v5")
    with pytest.raises(SeqrlError, match="state_dim 11") as error:
        load_agent(tmp_path, make_env("HalfCheetah-v5"))
    assert "\n" not in str(error.value)


def test_actions_are_clipped_to_the_action_space(tmp_path):
    write_checkpoint(tmp_path, "Hopper-v5", action_tanh=False)
    env = make_env("Hopper-v5")
    env.action_space = gym.spaces.Box(-0.01, 0.01, shape=(3,), dtype=np.float32)
    agent = load_agent(tmp_path, env)
    agent.reset(slot=0)
    action = agent.act(np.full(11, 5.0))
    assert env.action_space.contains(action) and np.abs(action).max() == pytest.approx(0.01)
