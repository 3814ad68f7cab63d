"""The Trajectory Transformer planner: the original beam search, its exact key/value cache, batching, the agent."""

import gc
import json
import os
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from seqrl import SeqrlError
from seqrl.planners import load_agent
from seqrl.planners.trajectory import memory
from seqrl.planners.trajectory import planner as planner_module
from seqrl.planners.trajectory.beam import beam_plan, filter_cdf, filter_top_k
from seqrl.planners.trajectory.config import TrajectoryTransformerConfig
from seqrl.planners.trajectory.decoding import CachedDecoder, FullWindowDecoder, GraphDecoder, window_start
from seqrl.planners.trajectory.discretizer import DISCRETIZER_FILE, Discretizer
from seqrl.planners.trajectory.model import TrajectoryTransformerModel
from seqrl.planners.trajectory.options import PlannerSettings, TrainArgs
from seqrl.planners.trajectory.planner import reward_value_estimator
from seqrl.planners.trajectory.train import train_tt

OBS, ACT = 11, 3  # Hopper
TRANSITION = OBS + ACT + 2
TOP_1 = dict(k_obs=1, k_act=1)  # deterministic search: every choice is an argmax
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hopper(seed: int = 0) -> gym.Env:
    """Real MuJoCo Hopper that keeps going when it falls, so that every rollout lasts as long as asked."""
    env = gym.make("Hopper-v5", terminate_when_unhealthy=False)
    env.reset(seed=seed)
    return env


def write_random_episodes(path: Path, steps: int, seed: int) -> None:
    """A D4RL-style file of uniformly random Hopper episodes."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(seed)
    columns = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts")}
    observation, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = rng.uniform(-1, 1, ACT).astype(np.float32)
        next_observation, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(columns, (observation, action, reward, terminated, truncated)):
            columns[key].append(value)
        observation = env.reset()[0] if terminated or truncated else next_observation
    columns["timeouts"][-1] = True
    with h5py.File(path, "w") as file:
        for key, values in columns.items():
            file[key] = np.array(values)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """2000 random Hopper steps as a D4RL .hdf5 file."""
    path = tmp_path_factory.mktemp("data") / "hopper-random.hdf5"
    write_random_episodes(path, steps=2000, seed=0)
    return path


@pytest.fixture(scope="module")
def checkpoint(data_file, tmp_path_factory) -> Path:
    """A small Trajectory Transformer trained briefly on the random Hopper data (a full seqrl checkpoint)."""
    out = tmp_path_factory.mktemp("tt") / "model"
    args = TrainArgs(
        dataset=str(data_file),
        out=str(out),
        steps=150,
        batch_size=32,
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_bins=25,
        sequence_length=4,
        warmup_epochs=0.5,
        decay_epochs=5,
        eval_every=1000,
        save_every=1000,
        quiet=True,
    )
    train_tt(args)
    return out


def tiny_checkpoint(
    directory: Path, observation_dim: int = OBS, action_dim: int = ACT, discretizer: bool = True
) -> Path:
    """A randomly initialised one-layer model with made-up bins, saved as a plain Hugging Face directory."""
    torch.manual_seed(0)
    transition_dim = observation_dim + action_dim + 2
    config = TrajectoryTransformerConfig(
        vocab_size=10,
        block_size=4 * transition_dim - 1,
        observation_dim=observation_dim,
        action_dim=action_dim,
        transition_dim=transition_dim,
        n_layer=1,
        n_head=1,
        n_embd=8,
    )
    TrajectoryTransformerModel(config).save_pretrained(directory)
    if discretizer:
        data = np.random.default_rng(0).uniform(-2, 2, (500, transition_dim))
        Discretizer.fit(data, config.vocab_size).save(directory / DISCRETIZER_FILE)
    return directory


def run_in_lockstep(agents: list, env: gym.Env, steps: int, on_step=None) -> None:
    """Step `env` with the first agent's actions while every agent plans from the same history."""
    observation, _ = env.reset(seed=0)
    for agent in agents:
        agent.reset(seed=0)
    for step in range(steps):
        actions = [agent.act(observation) for agent in agents]
        if on_step is not None:
            on_step(step, agents, actions)
        observation, reward, *_ = env.step(actions[0])
        for agent in agents:
            agent.observe(reward)


def test_filters_keep_what_the_original_keeps():
    logits = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    # the smallest probabilities whose total stays under 0.6 (0.1 + 0.2) are dropped, to -1000
    assert filter_cdf(logits, 0.6)[0, :2].tolist() == [-1000.0, -1000.0]
    assert torch.equal(filter_cdf(logits, 0.6)[0, 2:], logits[0, 2:])
    # below the smallest probability nothing fits, and the original still drops that smallest one
    assert filter_cdf(logits, 0.05)[0].tolist()[0] == -1000.0
    assert torch.isinf(filter_top_k(logits, 2)[0, :2]).all() and torch.equal(
        filter_top_k(logits, 2)[0, 2:], logits[0, 2:]
    )


def test_window_crops_whole_transitions_like_the_original():
    # the original keeps at most min(block_size, max_context_transitions * transition_dim - 1) tokens
    assert window_start(79, 79, 16) == 0
    assert window_start(80, 79, 16) == 16
    assert window_start(91, 79, 16) == 16  # a full context of 5 transitions + an observation loses one transition
    assert window_start(96, 79, 16) == 32


def test_greedy_search_is_greedy_decoding_with_the_discounted_value(checkpoint):
    """With one beam and top-1 everything, the plan is greedy decoding over the cropped window."""
    env = hopper()
    agent = load_agent(checkpoint, env, horizon=2, beam_width=1, n_expand=1, cdf_act=None, **TOP_1)
    observation, _ = env.reset(seed=3)
    agent.reset(seed=0)
    agent.act(observation)

    model, bins = agent.model, agent.discretizer
    sequence = bins.select(slice(0, OBS)).discretize(observation[None])  # (1, OBS)
    estimates = []  # expected reward and value of each step, from the unfiltered distributions
    with torch.inference_mode():
        while sequence.shape[1] < 2 * TRANSITION:
            window = sequence[:, window_start(sequence.shape[1], agent.max_tokens, TRANSITION) :]
            probs = model(window).logits[0, -1].softmax(-1)  # (vocab_size + 1,)
            dimension = sequence.shape[1] % TRANSITION
            if dimension >= TRANSITION - 2:
                estimates.append((probs[:-1] * bins.midpoints[dimension]).sum().item())
            sequence = torch.cat((sequence, probs.argmax().view(1, 1)), dim=1)
    reward_0, _, reward_1, value_1 = estimates
    value = reward_0 + 0.99 * reward_1 + 0.99**2 * value_1
    assert torch.equal(agent.slots[0].plan, sequence.view(2, TRANSITION))
    assert agent.slots[0].plan_value == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("settings", [dict(**TOP_1, beam_width=4), dict(beam_width=8)], ids=["top-1", "sampled"])
def test_cached_and_uncached_planners_give_identical_plans(checkpoint, settings):
    """20 real Hopper steps in which the window slides; with sampling, float64 keeps rounding off near-ties."""
    env = hopper()
    common = dict(horizon=4, n_expand=2, max_context_transitions=2, **settings)
    agents = [load_agent(checkpoint, env, **common), load_agent(checkpoint, env, kv_cache=False, **common)]
    if "k_act" not in settings:
        for agent in agents:
            agent.model.double()
    assert OBS + 4 * TRANSITION > agents[0].max_tokens  # the window slides within every search
    distinct_plans = set()

    def compare(step, agents, actions):
        cached, uncached = agents[0].slots[0], agents[1].slots[0]
        assert torch.equal(cached.plan, uncached.plan), f"plans differ at step {step}"
        assert cached.plan_value == pytest.approx(uncached.plan_value, rel=1e-5, abs=1e-6)
        np.testing.assert_array_equal(actions[0], actions[1])
        distinct_plans.add(tuple(cached.plan.flatten().tolist()))

    run_in_lockstep(agents, env, steps=20, on_step=compare)
    assert len(distinct_plans) > 10  # the plans follow the changing state


def test_cached_logits_equal_a_full_window_recomputation(checkpoint, monkeypatch):
    """With sampled actions and observations the beams differ; random beams' cached logits are checked at each token."""
    rng = np.random.default_rng(0)
    seen = {"calls": 0, "slides": 0, "distinct_beams": 0}

    class CheckedDecoder(CachedDecoder):
        def logits(self, sequences):
            start_before = self.start
            logits = super().logits(sequences)
            start = window_start(sequences.shape[1], self.max_tokens, TRANSITION)
            rows = torch.as_tensor(rng.choice(len(sequences), size=min(3, len(sequences)), replace=False))
            expected = self.model(sequences[rows, start:]).logits[:, -1]
            torch.testing.assert_close(logits[rows], expected, rtol=1e-5, atol=1e-5)
            seen["calls"] += 1
            seen["slides"] += start != start_before
            seen["distinct_beams"] = max(seen["distinct_beams"], len(torch.unique(sequences, dim=0)))
            return logits

    monkeypatch.setattr(planner_module, "CachedDecoder", CheckedDecoder)
    env = hopper()
    agent = load_agent(checkpoint, env, horizon=4, beam_width=8, k_obs=None, cdf_act=0.6, max_context_transitions=2)
    run_in_lockstep([agent], env, steps=6)
    assert seen["calls"] == 6 * (4 * (ACT + 2) + 3 * OBS)
    assert seen["slides"] > 6 and seen["distinct_beams"] > 8


@pytest.mark.parametrize("device", DEVICES)
def test_graph_decoder_plans_as_the_original(checkpoint, device):
    """GraphDecoder, the CUDA path (on CPU without graphs): 3 slots in one search, windows sliding, reused."""
    agent = load_agent(checkpoint, hopper(), device=device, horizon=4, beam_width=4, max_context_transitions=2)
    model = agent.model.double()  # float64 keeps rounding differences between batch shapes off near-ties
    settings, rows = agent.planner_settings, 3 * agent.planner_settings.n_expand * agent.planner_settings.beam_width
    generator = torch.Generator().manual_seed(0)
    prefixes = torch.randint(0, model.config.vocab_size, (3, TRANSITION + OBS), generator=generator).to(device)
    graph_decoder = GraphDecoder(model, agent.max_tokens, rows)

    def plan(decoder):
        generators = [torch.Generator(device).manual_seed(slot) for slot in range(3)]
        return beam_plan(decoder, prefixes, generators, agent.reward_and_value, settings, OBS, ACT)

    plans, values = plan(FullWindowDecoder(model, agent.max_tokens))
    for decoder in (CachedDecoder(model, agent.max_tokens, rows), graph_decoder, graph_decoder):
        if isinstance(decoder, GraphDecoder):
            decoder.reset()  # a second search replays the graphs the first one captured
        other_plans, other_values = plan(decoder)
        assert torch.equal(other_plans, plans)
        torch.testing.assert_close(other_values, values, rtol=1e-9, atol=1e-9)
    assert OBS + 4 * TRANSITION > agent.max_tokens  # the window slid within the search
    assert (len(graph_decoder.graphs) > 0) == (device == "cuda")


def test_batched_slots_plan_bit_for_bit_as_alone():
    """In float32, 4 slots searched together give each slot's lone plan and value to the bit (hopper-sized model with
    100 bins, beam 32: 64 cache rows per slot, where arithmetic that depended on the other rows would show)."""
    settings = PlannerSettings(beam_width=32, horizon=5)
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        vocab_size=100, observation_dim=OBS, action_dim=ACT, transition_dim=TRANSITION, block_size=10 * TRANSITION - 1
    )
    model = TrajectoryTransformerModel(config).eval()
    rng = np.random.default_rng(0)
    bins = Discretizer.fit(rng.normal(size=(500, 2)), config.vocab_size)  # reward and value
    estimate = reward_value_estimator(bins, settings.percentile)
    generator = torch.Generator().manual_seed(1)
    prefixes = torch.randint(0, config.vocab_size, (4, 4 * TRANSITION + OBS), generator=generator)
    max_tokens = settings.max_context_transitions * TRANSITION - 1

    def plan(slots: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        generators = [torch.Generator().manual_seed(slot) for slot in slots]
        decoder = CachedDecoder(model, max_tokens, len(slots) * settings.n_expand * settings.beam_width)
        return beam_plan(decoder, prefixes[slots], generators, estimate, settings, OBS, ACT)

    plans, values = plan([0, 1, 2, 3])
    for slot in range(4):
        alone_plan, alone_value = plan([slot])
        assert torch.equal(plans[slot], alone_plan[0]), f"slot {slot} planned otherwise in the batch"
        assert torch.equal(values[slot], alone_value[0]), f"slot {slot}'s value differs in the batch"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("settings", [TOP_1, {}], ids=["top-1", "sampled"])
def test_batched_envs_act_as_single_env_planners(checkpoint, settings, device):
    """K slots in one batched agent, one starting two steps late, act as K single-env planners.

    Sampled, each slot must draw from its own generator as a lone planner would (float64 keeps rounding
    differences between batch shapes off near-ties).
    """
    settings = dict(horizon=3, beam_width=4, max_context_transitions=3, **settings)
    envs = [hopper(seed) for seed in range(3)]
    batched = load_agent(checkpoint, envs[0], device=device, **settings)
    singles = [load_agent(checkpoint, env, device=device, **settings) for env in envs]
    if "k_act" not in settings:
        for agent in (batched, *singles):
            agent.model.double()
    observations = np.stack([env.reset(seed=seed)[0] for seed, env in enumerate(envs)])
    active = []
    for step in range(8):
        if step in (0, 2):  # slots 0 and 1 start at step 0, slot 2 at step 2: context lengths differ for a while
            for slot in [0, 1] if step == 0 else [2]:
                batched.reset(seed=slot, slot=slot)
                singles[slot].reset(seed=slot)
                active.append(slot)
        actions = batched.act_batch(observations[active], active)
        for action, slot in zip(actions, active):
            np.testing.assert_allclose(action, singles[slot].act(observations[slot]), atol=1e-5)
        rewards = []
        for action, slot in zip(actions, active):
            observations[slot], reward, *_ = envs[slot].step(action)
            singles[slot].observe(reward)
            rewards.append(reward)
        batched.observe_batch(np.array(rewards), active)


def held_state_size(agent) -> int:
    """Tokens and numbers the agent keeps between steps, over all slots."""
    size = 0
    for state in agent.slots.values():
        size += sum(tokens.numel() for tokens in state.context) + state.plan.numel()
        size += state.observation.size + state.action.size
    return size


def resident_bytes() -> int:
    """This process's resident memory."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_bounded_over_a_1000_step_episode(tmp_path, monkeypatch):
    env = hopper()
    agent = load_agent(tiny_checkpoint(tmp_path / "tiny"), env, horizon=1, beam_width=2, n_expand=1)
    cache_shapes, make_decoder = set(), agent.decoder

    def recorded(slots):
        decoder = make_decoder(slots)
        cache_shapes.add(tuple(decoder.cache.layers[0].shape))
        return decoder

    monkeypatch.setattr(agent, "decoder", recorded)
    observation, _ = env.reset(seed=0)
    agent.reset(seed=0)
    for step in range(1000):
        observation, reward, *_ = env.step(agent.act(observation))
        agent.observe(reward)
        if step in (199, 999):
            gc.collect()
            measured = (held_state_size(agent), len(gc.get_objects()), resident_bytes())
            if step == 199:
                then = measured
    assert len(agent.slots[0].context) == 5
    # (keys and values, n_expand * beam_width, n_head, window, head_dim), always
    assert cache_shapes == {(2, 2, 1, agent.max_tokens, 8)}
    assert measured[0] == then[0]  # the same context and plan sizes
    assert measured[1] - then[1] < 20  # no Python objects pile up (each leaked tensor or array would count)
    assert measured[2] - then[2] < 2_000_000  # and no memory: a leaked cache would be megabytes


def test_settings_come_from_defaults_then_checkpoint_then_options(checkpoint, tmp_path):
    env = hopper()
    defaults = load_agent(checkpoint, env).settings()
    assert {
        key: defaults[key] for key in ("horizon", "beam_width", "n_expand", "k_obs", "k_act", "cdf_obs", "cdf_act")
    } == {"horizon": 15, "beam_width": 128, "n_expand": 2, "k_obs": 1, "k_act": None, "cdf_obs": None, "cdf_act": 0.6}
    assert (defaults["percentile"], defaults["max_context_transitions"], defaults["plan_freq"]) == ("mean", 5, 1)
    assert (defaults["discount"], defaults["kv_cache"]) == (0.99, True)
    assert defaults["checkpoint"] == str(checkpoint) and len(defaults["checkpoint_digest"]) == 16

    meta = json.loads((checkpoint / "seqrl.json").read_text())
    custom = tmp_path / "custom"
    custom.mkdir()
    for path in checkpoint.iterdir():
        if path.is_file():
            (custom / path.name).write_bytes(path.read_bytes())
    (custom / "seqrl.json").write_text(
        json.dumps({**meta, "planner": {"horizon": 7, "beam_width": 16, "cdf_act": None}})
    )
    settings = load_agent(custom, env, beam_width=4, k_act=None, percentile=0.25).settings()
    assert (settings["horizon"], settings["beam_width"], settings["cdf_act"], settings["k_act"]) == (7, 4, None, None)
    assert settings["percentile"] == 0.25

    for bad in (
        dict(beam_width=0),
        dict(cdf_act="1.5"),
        dict(plan_freq=20),
        dict(percentile="median"),
        dict(k_obs=1000),
    ):
        with pytest.raises(SeqrlError):
            load_agent(checkpoint, env, **bad)


def test_plain_hf_directory_fits_its_bins_to_the_dataset(data_file, tmp_path):
    directory = tiny_checkpoint(tmp_path / "plain", discretizer=False)
    env = hopper()
    with pytest.raises(SeqrlError, match="--dataset"):
        load_agent(directory, env)
    agent = load_agent(directory, env, dataset=str(data_file), horizon=1, beam_width=2)
    with h5py.File(data_file) as file:
        observations = file["observations"][()]
    extremes = np.stack([observations.min(0), observations.max(0)]).astype(np.float32)  # the dataset holds float32
    assert torch.equal(agent.discretizer.thresholds[[0, -1], :OBS], torch.as_tensor(extremes, dtype=torch.float64))
    agent.reset(seed=0)
    assert agent.act(env.reset(seed=0)[0]).shape == (ACT,)


def test_bins_of_another_model_are_refused(tmp_path):
    directory = tiny_checkpoint(tmp_path / "tiny")
    Discretizer.fit(np.random.default_rng(0).normal(size=(100, 20)), 10).save(directory / DISCRETIZER_FILE)
    with pytest.raises(SeqrlError, match="belongs to another checkpoint"):
        load_agent(directory, hopper())


def test_rollout_flags_reach_the_planner(checkpoint, seqrl, tmp_path):
    log = tmp_path / "runs.jsonl"
    done = seqrl(
        "rollout",
        "--checkpoint",
        checkpoint,
        "--env",
        "Hopper-v5",
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--max-steps",
        "3",
        "--quiet",
        "--threads",
        "1",
        "--log",
        log,
        "--horizon",
        "2",
        "--beam-width",
        "3",
        "--n-expand",
        "1",
        "--k-obs",
        "2",
        "--k-act",
        "none",
        "--cdf-obs",
        "0.5",
        "--cdf-act",
        "none",
        "--percentile",
        "0.9",
        "--max-context-transitions",
        "2",
        "--plan-freq",
        "2",
        "--discount",
        "0.9",
        "--no-kv-cache",
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(record["episode"] for record in records) == [0, 1] and all(
        record["length"] == 3 for record in records
    )
    config = records[0]["config"]
    assert {
        key: config[key] for key in ("horizon", "beam_width", "n_expand", "k_obs", "k_act", "cdf_obs", "cdf_act")
    } == {"horizon": 2, "beam_width": 3, "n_expand": 1, "k_obs": 2, "k_act": None, "cdf_obs": 0.5, "cdf_act": None}
    assert (config["percentile"], config["max_context_transitions"], config["plan_freq"]) == (0.9, 2, 2)
    assert (config["discount"], config["kv_cache"]) == (0.9, False)


def test_dimension_mismatch_is_a_one_line_error_before_any_step(seqrl, tmp_path):
    directory = tiny_checkpoint(tmp_path / "cheetah", observation_dim=17, action_dim=6)
    log = tmp_path / "runs.jsonl"
    done = seqrl("rollout", "--checkpoint", directory, "--env", "Hopper-v5", "--episodes", "1", "--log", log)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error:")
    assert "observation_dim 17" in done.stderr and "Hopper-v5 has 11" in done.stderr
    assert not log.exists() or log.read_text() == ""


def test_searches_that_cannot_fit_are_refused_before_allocating(tmp_path, monkeypatch):
    directory, env = tiny_checkpoint(tmp_path / "tiny"), hopper()
    with pytest.raises(SeqrlError, match="beam width 1000 x n_expand 100000 needs about") as error:
        load_agent(directory, env, beam_width=1000, n_expand=100000)  # ~10^8 beams: terabytes
    assert "\n" not in str(error.value) and "lower --beam-width or --n-expand" in str(error.value)

    agent = load_agent(directory, env, horizon=1, beam_width=64)  # with 4 searches' worth free: 8 envs do not fit
    needed = memory.search_bytes(agent.model.config, agent.planner_settings, 1, agent.max_tokens, True, 4)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 * needed)
    observations = np.stack([hopper(seed).reset(seed=seed)[0] for seed in range(8)])
    for slot in range(8):
        agent.reset(seed=slot, slot=slot)
    with pytest.raises(SeqrlError, match="search over 8 envs .* or plan fewer envs at once"):
        agent.act_batch(observations, list(range(8)))
    assert agent.act_batch(observations[:2], [0, 1]).shape == (2, ACT)
