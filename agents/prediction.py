"""`seqrl rollout --predict H`: an agent's H-step open-loop predictions of one episode against what happened, drawn.

After the episode ends, the agent's model starts from the real context at up to MAX_SEGMENTS evenly spaced
steps t and predicts H steps ahead fed the actions actually taken (`Agent.predict`); the plot shows the
predicted reward and first observation dimensions beside the real ones, and the error by steps ahead.
"""

from pathlib import Path

import numpy as np
from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.agents.loop import Step
from seqrl.agents.plot import _pyplot, save_png

MAX_SEGMENTS = 8  # predictions drawn per episode
SHOWN_DIMENSIONS = 3  # observation dimensions drawn (the first ones)


def predict_plot_path(video: Path | None, log: Path | None) -> Path:
    """Where `--predict` draws: beside --video, else beside --log, as <stem>-predict.png."""
    beside = video if video is not None else log
    if beside is None:
        raise SeqrlError("--predict draws its plot beside --video or --log; add --video FILE.mp4 or --log FILE")
    return beside.with_name(f"{beside.stem}-predict.png")


class PredictionPlot:
    """Gathers one episode's observations, actions and rewards from the loop's steps, then draws the predictions."""

    def __init__(self, path: Path, agent: Agent, env_id: str, episode: int, horizon: int):
        self.plt = _pyplot()  # missing matplotlib is an error before the rollout, not after
        self.path, self.agent, self.env_id, self.episode, self.horizon = path, agent, env_id, episode, horizon
        self.observations: list[np.ndarray] = []  # (obs_dim,) each, steps 0 .. T
        self.actions: list[np.ndarray] = []  # (act_dim,) each, steps 0 .. T - 1
        self.rewards: list[float] = []
        self.written = False

    def on_step(self, step: Step) -> None:
        """Keep the filmed episode's transition of this step, if it runs."""
        if self.episode in step.episodes:
            row = step.episodes.index(self.episode)
            if not self.observations:
                self.observations.append(step.observations[row])
            self.observations.append(step.next_observations[row])
            self.actions.append(step.actions[row])
            self.rewards.append(float(step.rewards[row]))

    def write(self) -> None:
        """Predict from evenly spaced steps of the episode and draw them against the real ones."""
        observations, actions, rewards = np.array(self.observations), np.array(self.actions), np.array(self.rewards)
        length = len(rewards)
        spacing = max(self.horizon, -(-length // MAX_SEGMENTS))
        segments = []  # (t, predicted observations (h, obs_dim), predicted rewards (h,))
        for t in range(0, length, spacing):
            h = min(self.horizon, length - t)
            predicted = self.agent.predict(observations[: t + 1], actions[: t + h], rewards[:t])
            segments.append((t, *predicted))
        self._draw(observations, rewards, segments)
        self.written = True

    def _draw(self, observations: np.ndarray, rewards: np.ndarray, segments: list) -> None:
        from matplotlib.ticker import MaxNLocator

        plt = self.plt
        shown = min(SHOWN_DIMENSIONS, observations.shape[1])
        figure, axes = plt.subplots(shown + 2, 1, figsize=(9, 2.2 * (shown + 2)), constrained_layout=True)
        # (label, real values, predicted values of a segment, offset): rewards from step t, observations from t + 1
        series = [("reward", rewards, lambda segment: segment[2], 0)]
        series += [
            (f"observation {d}", observations[:, d], lambda segment, d=d: segment[1][:, d], 1) for d in range(shown)
        ]
        for axis, (label, real, predicted, offset) in zip(axes, series):
            axis.plot(np.arange(len(real)), real, color="black", linewidth=1, label="real")
            for index, segment in enumerate(segments):
                values = predicted(segment)
                start = segment[0] + offset
                axis.plot(
                    np.arange(start, start + len(values)),
                    values,
                    color="tab:orange",
                    linestyle="--",
                    label="predicted" if index == 0 else None,
                )
            axis.set_ylabel(label)
            axis.set_xlabel("step")
        axes[0].legend(loc="upper right")
        errors = self._errors(observations, rewards, segments)
        steps_ahead = np.arange(1, len(errors["reward"]) + 1)
        for label, error in errors.items():
            axes[-1].plot(steps_ahead, error, marker="o", label=label)
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].set_xlabel("steps ahead")
        axes[-1].set_ylabel("|error| / episode std")
        axes[-1].legend(loc="upper left")
        figure.suptitle(
            f"{self.env_id} episode {self.episode}: {self.horizon}-step open-loop predictions, actions as taken"
        )
        save_png(plt, figure, self.path)

    def _errors(self, observations: np.ndarray, rewards: np.ndarray, segments: list) -> dict[str, np.ndarray]:
        """Mean absolute error by steps ahead, over segments, in units of each quantity's std over the episode."""
        observation_scale = np.maximum(observations.std(axis=0), 1e-8)  # (obs_dim,)
        reward_scale = max(float(rewards.std()), 1e-8)
        by_step: dict[str, list[list[float]]] = {"observations": [], "reward": []}
        for t, predicted_observations, predicted_rewards in segments:
            h = len(predicted_rewards)
            observation_error = np.abs(predicted_observations - observations[t + 1 : t + 1 + h]) / observation_scale
            reward_error = np.abs(predicted_rewards - rewards[t : t + h]) / reward_scale
            for ahead in range(h):
                for key, value in (("observations", observation_error[ahead].mean()), ("reward", reward_error[ahead])):
                    if len(by_step[key]) <= ahead:
                        by_step[key].append([])
                    by_step[key][ahead].append(float(value))
        return {key: np.array([np.mean(errors) for errors in steps]) for key, steps in by_step.items()}
