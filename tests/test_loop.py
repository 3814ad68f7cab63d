"""The episode loop on real MuJoCo envs: seeding, slots, truncation, callbacks, memory, the agent's own-loop facade."""

import gc
import tracemalloc
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import pytest
from seqrl.agents.loop import Step, evaluate, run_episodes
from seqrl.agents.random import RandomAgent
from seqrl.envs.families import normalized_score
from seqrl.envs.make import make_env, make_vector_env


class SpyAgent(RandomAgent):
    """RandomAgent that records how the loop calls it."""

    def __init__(self, action_space: gym.spaces.Box):
        super().__init__(action_space)
        self.resets: list[tuple[int, int]] = []
        self.acted: list[list[int]] = []
        self.rewards: dict[int, float] = {}  # slot -> reward summed since its last reset

    def reset(self, seed: int | None = None, slot: int = 0) -> None:
        super().reset(seed, slot)
        self.resets.append((seed, slot))
        self.rewards[slot] = 0.0

    def act_batch(self, observations: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        assert observations.shape == (len(slots), 11)
        self.acted.append(list(slots))
        return super().act_batch(observations, slots)

    def observe_batch(self, rewards: np.ndarray, slots: Sequence[int]) -> None:
        for reward, slot in zip(rewards, slots):
            self.rewards[slot] += reward


def hopper_agent() -> RandomAgent:
    return RandomAgent(make_env("Hopper-v5").action_space)


def summary(results) -> list[tuple]:
    return [(r.episode, r.seed, r.episode_return, r.length, r.terminated, r.truncated) for r in results]


def test_results_are_the_same_for_any_number_of_envs():
    single = evaluate(hopper_agent(), "Hopper-v5", episodes=5, seed=10)
    assert [r.episode for r in single] == list(range(5))
    assert [r.seed for r in single] == list(range(10, 15))
    assert len({r.episode_return for r in single}) == 5  # the seeds give different episodes
    for r in single:
        assert r.normalized_score == pytest.approx(normalized_score("Hopper-v5", r.episode_return))
        assert r.terminated != r.truncated and r.wall_time_s > 0
    for num_envs in (2, 3):
        assert summary(evaluate(hopper_agent(), "Hopper-v5", episodes=5, seed=10, num_envs=num_envs)) == summary(single)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_episode_i_is_reproduced_alone_by_seed_plus_i(num_envs):
    run = evaluate(hopper_agent(), "Hopper-v5", episodes=4, seed=7, num_envs=num_envs)
    for i in (1, 3):
        alone = evaluate(hopper_agent(), "Hopper-v5", episodes=1, seed=7 + i, num_envs=num_envs)[0]
        assert (alone.seed, alone.episode_return, alone.length) == (run[i].seed, run[i].episode_return, run[i].length)


def test_max_steps_truncates_each_episode():
    results = evaluate(hopper_agent(), "Hopper-v5", episodes=6, seed=0, max_steps=12, num_envs=2)
    assert all(r.length <= 12 for r in results)
    capped = [r for r in results if r.length == 12]
    assert capped and all(r.truncated for r in capped)
    assert all(r.terminated for r in results if r.length < 12)


def test_agent_sees_each_slot_reset_with_its_episode_seed_and_only_active_slots():
    envs = make_vector_env("Hopper-v5", 3)
    agent = SpyAgent(envs.single_action_space)
    results = list(run_episodes(agent, envs, range(5), seed=100))
    envs.close()
    assert sorted(seed for seed, _ in agent.resets) == list(range(100, 105))
    assert [slot for _, slot in agent.resets[:3]] == [0, 1, 2]
    assert all(len(set(slots)) == len(slots) and set(slots) <= {0, 1, 2} for slots in agent.acted)
    assert agent.acted[-1] != [0, 1, 2]  # at the end, finished slots idle instead of being acted on
    assert sum(map(len, agent.acted)) == sum(r.length for r in results)
    last_by_slot = {slot: seed for seed, slot in agent.resets}
    for slot, seed in last_by_slot.items():  # observe_batch got each episode's rewards
        assert agent.rewards[slot] == pytest.approx(next(r.episode_return for r in results if r.seed == seed))


def test_idle_slots_whose_env_ends_are_reset():
    # slot 0's env truncates every 5 steps; it idles (and keeps ending) while slot 1 runs its 50-step episode
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("Swimmer-v5", max_episode_steps=5), lambda: gym.make("Swimmer-v5", max_episode_steps=50)],
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )
    agent = RandomAgent(envs.single_action_space)
    results = sorted(run_episodes(agent, envs, range(2), seed=3), key=lambda r: r.episode)
    envs.close()
    alone = evaluate(agent, gym.make("Swimmer-v5", max_episode_steps=50), episodes=1, seed=4)[0]
    assert [r.length for r in results] == [5, 50]
    assert results[1].episode_return == pytest.approx(alone.episode_return)


def test_on_step_reports_every_step_of_every_episode():
    envs = make_vector_env("Hopper-v5", 2)
    steps: dict[int, list] = {}

    def on_step(step: Step) -> None:
        for j, episode in enumerate(step.episodes):
            steps.setdefault(episode, []).append(
                (
                    step.observations[j].copy(),
                    step.rewards[j],
                    step.next_observations[j].copy(),
                    step.returns[j],
                    step.truncations[j],
                )
            )

    results = list(
        run_episodes(RandomAgent(envs.single_action_space), envs, range(4), seed=0, max_steps=15, on_step=on_step)
    )
    envs.close()
    for r in results:
        observations, rewards, next_observations, returns, truncations = zip(*steps[r.episode])
        assert len(rewards) == r.length
        assert sum(rewards) == pytest.approx(r.episode_return) == returns[-1]
        assert np.array_equal(
            np.stack(observations[1:]), np.stack(next_observations[:-1])
        )  # each step starts where the last ended
        assert truncations[-1] == r.truncated


def test_memory_stays_flat_over_long_episodes():
    env = make_env("Swimmer-v5")  # never terminates: its episodes last the full 1000 steps
    steps, live_bytes = [0], {}  # memory in use after step 100 and after step 1000

    def on_step(step: Step) -> None:
        steps[0] += 1
        if steps[0] in (100, 1000):
            gc.collect()
            live_bytes[steps[0]] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    results = list(run_episodes(RandomAgent(env.action_space), env, range(1), on_step=on_step))
    tracemalloc.stop()
    assert results[0].length == 1000
    assert live_bytes[1000] - live_bytes[100] < 10_000  # keeping even one float per step would take 28 kB


def test_agent_facade_drives_its_own_env_loop():
    env = make_env("Hopper-v5")
    agent = RandomAgent(env.action_space)
    expected = evaluate(agent, env, episodes=1, seed=5)[0]
    observation, _ = env.reset(seed=5)
    agent.reset(seed=5)
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(agent.act(observation))
        agent.observe(reward)
        total += reward
        done = terminated or truncated
    assert total == pytest.approx(expected.episode_return)
