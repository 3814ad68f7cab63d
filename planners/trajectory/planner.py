"""The Trajectory Transformer planner as an agent: beam search from each env's recent transitions.

Per env slot the agent keeps the last `max_context_transitions` real transitions as tokens (reward
discretized, value a placeholder that lands in the top bin, as the original), plans with
`beam_plan` every `plan_freq` steps and follows the best plan's actions in between. All slots that
need a plan at a step are searched together, one model call per token for slots whose context
windows have the same length.
"""

import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.planners.checkpoint import file_digest, weights_file
from seqrl.planners.metadata import META_FILE
from seqrl.planners.registry import AgentSource
from seqrl.planners.trajectory.beam import beam_plan
from seqrl.planners.trajectory.config import TrajectoryTransformerConfig
from seqrl.planners.trajectory.data import episode_transitions
from seqrl.planners.trajectory.decoding import CachedDecoder, FullWindowDecoder, GraphDecoder, window_start
from seqrl.planners.trajectory.discretizer import DISCRETIZER_FILE, Discretizer
from seqrl.planners.trajectory.memory import check_search_memory
from seqrl.planners.trajectory.model import TrajectoryTransformerModel
from seqrl.planners.trajectory.options import PlannerSettings, TrajectoryMeta

VALUE_PLACEHOLDER = 1e6  # context transitions carry no value; the model never attends to value tokens anyway


@dataclass
class SlotState:
    """One env slot's episode: its random stream, recent transitions and current plan."""

    generator: torch.Generator
    context: deque[torch.Tensor]  # (transition_dim,) tokens of each recent transition, the latest last
    plan: torch.Tensor | None = None  # (horizon, transition_dim) tokens of the best plan
    plan_value: float | None = None
    step: int = 0  # env steps taken this episode
    observation: np.ndarray | None = None  # the last observation acted on
    action: np.ndarray | None = None  # and the action taken


class TrajectoryPlanner(Agent):
    """Beam-search planner over a Trajectory Transformer, one independent episode per slot."""

    name = "trajectory-transformer"
    has_model = True

    def __init__(
        self,
        model: TrajectoryTransformerModel,
        discretizer: Discretizer,
        settings: PlannerSettings,
        info: dict[str, Any] | None = None,
    ) -> None:
        config = model.config
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.discretizer = discretizer.to(self.device)
        self.planner_settings = settings
        self.info = info or {}
        self.observation_dim, self.action_dim = config.observation_dim, config.action_dim
        self.transition_dim = config.transition_dim
        self.max_tokens = min(config.block_size, settings.max_context_transitions * config.transition_dim - 1)
        self.observation_bins = self.discretizer.select(slice(0, self.observation_dim))
        self.reward_and_value = reward_value_estimator(self.discretizer.select(slice(-2, None)), settings.percentile)
        self.slots: dict[int, SlotState] = {}
        self.graph_decoder: GraphDecoder | None = None  # on CUDA, kept across searches with its captured graphs
        self.check_memory(1)  # before anything large is allocated

    def reset(self, seed: int | None = None, slot: int = 0) -> None:
        """Start a new episode in `slot`, its sampling generator seeded with `seed`."""
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        self.slots[slot] = SlotState(generator, deque(maxlen=self.planner_settings.max_context_transitions))

    def act_batch(self, observations: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        """Actions (N, act_dim) for observations (N, obs_dim): replan the slots due, then read each plan."""
        observations = np.array(observations, dtype=np.float64)  # a copy: callers may reuse their buffer
        if observations.shape != (len(slots), self.observation_dim):
            raise SeqrlError(
                f"planner got observations of shape {observations.shape} for {len(slots)} slots; "
                f"expected ({len(slots)}, {self.observation_dim})"
            )
        if not np.isfinite(observations).all():  # the discretizer would clamp an infinite one into its edge bin
            raise SeqrlError(
                f"planner got a non-finite observation in slot(s) {list(slots)}; fix the env or its wrapper"
            )
        states = [self.state(slot) for slot in slots]
        due = [i for i, state in enumerate(states) if state.step % self.planner_settings.plan_freq == 0]
        if due:
            self.replan([states[i] for i in due], observations[due])
        actions = []
        for state, observation in zip(states, observations):
            transition = self.discretizer.reconstruct(state.plan[state.step % self.planner_settings.plan_freq])
            state.observation = observation
            state.action = transition[self.observation_dim : self.observation_dim + self.action_dim].cpu().numpy()
            actions.append(state.action)
        return np.stack(actions)

    def observe_batch(self, rewards: np.ndarray, slots: Sequence[int]) -> None:
        """Add each slot's last transition (observation, action, reward) to its context."""
        for reward, slot in zip(np.asarray(rewards, dtype=np.float64), slots):
            state = self.state(slot)
            values = np.concatenate([state.observation, state.action, [reward, VALUE_PLACEHOLDER]])
            state.context.append(self.discretizer.discretize(values))
            state.step += 1

    def plan(self, slot: int = 0) -> np.ndarray | None:
        """Bin midpoints (steps, obs_dim) of the best plan's observations from the env's latest one on."""
        state = self.state(slot)
        if state.plan is None:
            return None
        taken = (state.step - 1) % self.planner_settings.plan_freq + 1  # the plan's steps the env has taken
        return self.observation_bins.reconstruct(state.plan[taken:, : self.observation_dim]).cpu().numpy()

    def predict(
        self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Open-loop predictions from the episode's real context, fed the actions taken (see `Agent.predict`)."""
        from seqrl.planners.trajectory.predict import open_loop  # it imports this module

        return open_loop(self, observations, actions, rewards)

    def settings(self) -> dict[str, Any]:
        """Checkpoint, its digest and every effective planner setting, for logs."""
        return {
            "agent": self.name,
            **self.info,
            **dataclasses.asdict(self.planner_settings),
            "device": str(self.device),
        }

    def state(self, slot: int) -> SlotState:
        """The episode state of `slot`, or an error if `reset` was never called for it."""
        if slot not in self.slots:
            raise SeqrlError(f"slot {slot} has no episode; call reset(seed, slot={slot}) before acting")
        return self.slots[slot]

    def replan(self, states: list[SlotState], observations: np.ndarray) -> None:
        """Search a new plan for each of `states` from its context and current observation (N, obs_dim)."""
        observation_tokens = self.observation_bins.discretize(observations)
        prefixes = []
        for state, tokens in zip(states, observation_tokens):
            prefix = torch.cat([*state.context, tokens])
            # drop the context the model's window would crop anyway, so that slots line up by length
            prefixes.append(prefix[window_start(len(prefix), self.max_tokens, self.transition_dim) :])
        for length in sorted({len(prefix) for prefix in prefixes}):
            group = [i for i, prefix in enumerate(prefixes) if len(prefix) == length]
            plans, values = beam_plan(
                self.decoder(len(group)),
                torch.stack([prefixes[i] for i in group]),
                [states[i].generator for i in group],
                self.reward_and_value,
                self.planner_settings,
                self.observation_dim,
                self.action_dim,
            )
            for i, plan, value in zip(group, plans, values.tolist()):
                states[i].plan, states[i].plan_value = plan, value

    def check_memory(self, slots: int) -> None:
        """Refuse a search over `slots` env slots that would not fit in the device's free memory."""
        settings, itemsize = self.planner_settings, next(self.model.parameters()).element_size()
        config = self.model.config
        check_search_memory(config, settings, slots, self.max_tokens, settings.kv_cache, self.device, itemsize)

    def decoder(self, slots: int) -> CachedDecoder | FullWindowDecoder | GraphDecoder:
        """A decoder for a search over `slots` env slots, once its memory is known to fit (static shapes on CUDA)."""
        self.check_memory(slots)
        settings = self.planner_settings
        rows = slots * settings.n_expand * settings.beam_width
        if not settings.kv_cache:
            return FullWindowDecoder(self.model, self.max_tokens)
        if self.device.type != "cuda":
            return CachedDecoder(self.model, self.max_tokens, rows)
        if self.graph_decoder is None or self.graph_decoder.cache.rows < rows:
            self.graph_decoder = None  # free the smaller cache and its graphs first
            self.graph_decoder = GraphDecoder(self.model, self.max_tokens, rows)
        self.graph_decoder.reset()
        return self.graph_decoder


def reward_value_estimator(bins: Discretizer, percentile: str | float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map probs (rows, 2, vocab_size + 1) of reward and value tokens to estimates (rows, 2), without the stop token."""
    if percentile == "mean":
        return lambda probs: bins.expectation(probs[..., :-1])
    return lambda probs: bins.percentile(probs[..., :-1], float(percentile))


def load_agent(source: AgentSource) -> TrajectoryPlanner:
    """The planner of a loaded seqrl or plain HF checkpoint (no bins: fitted to its dataset), settings overriding."""
    model, meta = source.model, source.meta
    config = model.config
    discretizer, bins_source = checkpoint_discretizer(source.directory, meta, source.dataset, config)
    # the original's defaults < the training discount < seqrl.json's "planner" block < `source.settings`
    stored = PlannerSettings.from_dict(
        {"discount": meta.discount, **meta.planner}, f"{source.directory / META_FILE} planner"
    )
    planner_settings = dataclasses.replace(stored, **source.settings)
    for name in ("k_obs", "k_act"):
        top_k = getattr(planner_settings, name)
        if top_k is not None and top_k > config.vocab_size + 1:
            raise SeqrlError(
                f"{name} {top_k} exceeds the {config.vocab_size + 1} tokens of {source.directory}; lower it or use none"
            )
    info = {
        "checkpoint": str(source.directory),
        "checkpoint_digest": file_digest(weights_file(source.directory)),
        "discretizer": bins_source,
    }
    return TrajectoryPlanner(model.to(source.device), discretizer, planner_settings, info)


def checkpoint_discretizer(
    directory: Path, meta: TrajectoryMeta, dataset: str | None, config: TrajectoryTransformerConfig
) -> tuple[Discretizer, str]:
    """The checkpoint's `discretizer.npz`, else bins fitted to `dataset` as training fits them; and their source.

    Bins whose shape does not fit the model's tokens are an error."""
    if (directory / DISCRETIZER_FILE).exists():
        discretizer, bins_source = Discretizer.load(directory / DISCRETIZER_FILE), str(directory / DISCRETIZER_FILE)
    elif dataset is None:
        raise SeqrlError(
            f"{directory} has no {DISCRETIZER_FILE} (plain TT checkpoints such as CarlCochet/trajectory-transformer-* "
            "ship no bins); pass --dataset ID (the data the model was trained on) to fit them"
        )
    else:
        from seqrl.envs.datasets import load_dataset

        episodes = load_dataset(dataset).episodes
        rows = [episode_transitions(e, meta.discount, meta.termination_penalty) for e in episodes]
        discretizer = Discretizer.fit(np.concatenate(rows), config.vocab_size, meta.discretizer)
        bins_source = f"fitted to {dataset}"
    if discretizer.thresholds.shape != (config.vocab_size + 1, config.transition_dim):
        raise SeqrlError(
            f"{bins_source} has thresholds of shape {tuple(discretizer.thresholds.shape)} but the model needs "
            f"({config.vocab_size + 1}, {config.transition_dim}); it belongs to another checkpoint or dataset: "
            "use the bins or the data the model was trained on"
        )
    return discretizer, bins_source


def info_rows(directory: Path, config: TrajectoryTransformerConfig, meta: TrajectoryMeta) -> list[tuple[str, str]]:
    """`seqrl info` rows of a TT: dimensions, tokenization, value discount, planner defaults and architecture."""
    discretizer = directory / DISCRETIZER_FILE
    if discretizer.exists():
        Discretizer.load(discretizer)  # a broken file is an error here, not a healthy-looking row
    planner = ", ".join(f"{name} {value}" for name, value in meta.planner.items()) or "the original's"
    return [
        (
            "dimensions",
            f"observation {config.observation_dim}, action {config.action_dim}, transition {config.transition_dim}",
        ),
        ("tokens", f"{config.vocab_size} bins per dimension, block size {config.block_size}"),
        (
            "discretizer",
            f"{meta.discretizer} ({discretizer.name})"
            if discretizer.exists()
            else "missing: pass --dataset to build one",
        ),
        ("discount", f"{meta.discount}" if meta.kind else f"{meta.discount} (not recorded; the default)"),
        ("planner defaults", planner),
        ("architecture", f"n_layer {config.n_layer}, n_head {config.n_head}, n_embd {config.n_embd}"),
    ]
