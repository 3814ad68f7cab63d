"""The methods seqrl runs, keyed by `config.json`'s `model_type`: one dispatch for loading, agents and `seqrl info`."""

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import gymnasium as gym
from seqrl import SeqrlError
from seqrl.agents.base import Agent
from seqrl.agents.bundled import bundled_checkpoint, bundled_methods
from seqrl.agents.options import Options
from seqrl.agents.random import RandomAgent
from seqrl.agents.rollout import RolloutOptions
from seqrl.envs.datasets import dataset_reference
from seqrl.envs.make import check_box_spaces, env_identity
from seqrl.planners.decision.options import DecisionMeta, PolicySettings
from seqrl.planners.decision.statistics import StateStatistics, given_statistics
from seqrl.planners.metadata import CONFIG_FILE, CheckpointMeta, read_json
from seqrl.planners.trajectory.options import PlannerSettings, TrajectoryMeta


@dataclass(frozen=True)
class AgentSource:
    """What a method's `load_agent` builds its agent from: the loaded model and the rest of the checkpoint."""

    model: Any  # the method's model, in eval mode, on the CPU
    directory: Path
    env: gym.Env  # checked to fit the model's observation and action sizes
    meta: CheckpointMeta  # the method's subclass
    dataset: str | None  # where statistics or bins come from when the checkpoint lacks them
    statistics: StateStatistics | None  # a DT's state statistics given by the user, overriding the checkpoint's
    hub_id: str | None  # ORG/NAME when loaded from the hub, for what its authors published beside it
    device: Any  # torch.device to run on
    settings: dict[str, Any]  # agent settings that override the checkpoint's


@dataclass(frozen=True)
class Method:
    """One kind of checkpoint: its names, option classes and (imported on first use) model and agent code."""

    model_type: str  # config.json's model_type
    kind: str  # seqrl.json's kind and the --agent name
    title: str
    settings: type[Options]  # the agent's settings (planner or policy)
    meta: type[CheckpointMeta]  # its seqrl.json
    module: str  # defines `load_agent(source: AgentSource)` and `info_rows(directory, config, meta)`
    model_path: str  # "module:Class" of the model; its `config_class` reads config.json
    dims: tuple[str, str]  # the config fields holding the observation and action sizes

    def model_class(self) -> type:
        """The model class (imports torch on first use)."""
        module, name = self.model_path.split(":")
        return getattr(import_module(module), name)

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse settings that are not this method's agent settings (a one-line error naming the flags)."""
        unknown = sorted(set(settings) - set(self.settings.field_names()))
        if unknown:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in unknown)
            takes = ", ".join(f"--{name.replace('_', '-')}" for name in self.settings.field_names())
            raise SeqrlError(f"{flags}: not a setting of {self.title} agents (they take {takes}); drop it")

    def code(self) -> Any:
        """The module with the method's `load_agent` and `info_rows`."""
        return import_module(self.module)


METHODS = {
    method.model_type: method
    for method in (
        Method(
            "trajectory_transformer",
            "tt",
            "Trajectory Transformer",
            PlannerSettings,
            TrajectoryMeta,
            "seqrl.planners.trajectory.planner",
            "seqrl.planners.trajectory.model:TrajectoryTransformerModel",
            ("observation_dim", "action_dim"),
        ),
        Method(
            "decision_transformer",
            "dt",
            "Decision Transformer",
            PolicySettings,
            DecisionMeta,
            "seqrl.planners.decision.policy",
            "seqrl.planners.decision.model:DecisionTransformerModel",
            ("state_dim", "act_dim"),
        ),
    )
}


def method_of(directory: Path) -> Method:
    """The method of a checkpoint directory, from its config.json's model_type, or a one-line error."""
    model_type = read_json(Path(directory) / CONFIG_FILE).get("model_type")
    if model_type not in METHODS:
        known = " and ".join(repr(name) for name in METHODS)
        raise SeqrlError(
            f"{Path(directory) / CONFIG_FILE} has model_type {model_type!r}; seqrl runs {known} checkpoints"
        )
    return METHODS[model_type]


def method_named(kind: str) -> Method:
    """The method whose kind is `kind` ('tt' or 'dt')."""
    return next(method for method in METHODS.values() if method.kind == kind)


def load_agent(
    checkpoint: str | Path,
    env: gym.Env,
    dataset: str | None = None,
    device: str = "cpu",
    statistics: StateStatistics | None = None,
    **settings: Any,
) -> Agent:
    """The agent a checkpoint directory (or hub id) defines, checked against `env`; `settings` override its defaults."""
    from seqrl.planners.checkpoint import resolve_checkpoint
    from seqrl.planners.device import resolve_device
    from seqrl.planners.hub import hub_repo_id

    env_id, observation_space, action_space = env_identity(env)
    check_box_spaces(observation_space, action_space, env_id or "the env")
    directory = resolve_checkpoint(checkpoint)
    method = method_of(directory)
    method.check_settings(settings)
    if statistics is not None and method.kind != "dt":
        raise SeqrlError(f"{statistics.source}: state statistics apply to Decision Transformers, not {method.title}s")
    meta = method.meta.read(directory)
    model = method.model_class().from_pretrained(directory)
    env_id, observation_space, action_space = env_identity(env)
    model_dims = tuple(getattr(model.config, name) for name in method.dims)
    env_dims = (observation_space.shape[0], action_space.shape[0])
    if model_dims != env_dims:
        raise SeqrlError(
            f"checkpoint {directory} has {method.dims[0]} {model_dims[0]} and {method.dims[1]} {model_dims[1]} but "
            f"{env_id or 'the env'} has {env_dims[0]} and {env_dims[1]}; "
            "pass the env it was trained on"
        )
    hub_id = hub_repo_id(str(checkpoint))
    source = AgentSource(model, directory, env, meta, dataset, statistics, hub_id, resolve_device(device), settings)
    agent = method.code().load_agent(source)
    # scores are relative to the dataset's own reference returns when it (or the training data) is local and has them
    agent.reference = dataset_reference(dataset or ",".join(meta.datasets))
    return agent


def choose_agent(env: gym.Env, options: RolloutOptions) -> tuple[Agent, str, str]:
    """The agent `seqrl rollout` runs for `options`, its name for logs and a line saying which agent runs."""
    from seqrl.planners.device import set_threads

    env_id = env.spec.id
    bundled = None
    if options.checkpoint is None and options.agent != "random":
        bundled = bundled_checkpoint(env_id, options.agent)
        if bundled is None and options.agent is not None:
            shipped = ", ".join(bundled_methods(env_id)) or "none"
            raise SeqrlError(
                f"no bundled {options.agent} agent for {env_id} (bundled: {shipped}); "
                "train one and pass --checkpoint DIR"
            )
    set_threads(options.threads)
    if options.checkpoint is not None or bundled is not None:
        source = options.checkpoint if options.checkpoint is not None else str(bundled)
        statistics = given_statistics(options.state_mean, options.state_std, options.state_statistics)
        agent = load_agent(source, env, options.dataset, options.device, statistics, **options.settings)
        name = options.checkpoint if options.checkpoint is not None else f"bundled:{bundled.name}"
        return agent, name, f"agent: {agent.name} from {name}"
    if options.settings:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in options.settings)
        raise SeqrlError(f"{flags}: the random agent takes no settings; drop them or pick a trained agent")
    note = "" if options.agent is not None else f" (no trained agent is bundled for {env_id}; pass --checkpoint DIR)"
    return RandomAgent(env.action_space), "random", f"agent: random{note}"
