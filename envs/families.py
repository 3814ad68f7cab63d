"""Per-env-family constants, keyed by one `env_family`: D4RL's reference returns and the DT paper's target returns."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvFamily:
    """What seqrl knows about an env family (Hopper-v5, hopper-medium-v2, ... all belong to 'hopper')."""

    random_return: float  # D4RL's reference return of a random policy
    expert_return: float  # and of an expert
    dt_target_return: float | None = None  # the return the Decision Transformer paper conditioned on


FAMILIES = {
    "hopper": EnvFamily(-20.272305, 3234.3, dt_target_return=3600.0),
    "halfcheetah": EnvFamily(-280.178953, 12135.0, dt_target_return=12000.0),
    "walker2d": EnvFamily(1.629008, 4592.3, dt_target_return=5000.0),
    "ant": EnvFamily(-325.6, 3879.7),
}


def env_family(env_id: str) -> str:
    """The lower-case env name without namespace or suffixes: 'Hopper-v5' and 'hopper-medium-v2' -> 'hopper'."""
    return env_id.rsplit("/", 1)[-1].split("-", 1)[0].lower()


def family_of(env_id: str | None) -> EnvFamily | None:
    """The env's family constants, or None for an env seqrl has none for."""
    return FAMILIES.get(env_family(env_id)) if env_id else None


@dataclass(frozen=True)
class Reference:
    """The returns a normalized score of 0 and 100 stand for, and where they come from."""

    min_return: float
    max_return: float
    source: str  # "minari:<dataset id>" (the dataset's ref_min_score/ref_max_score) or "d4rl:<family>"

    def score(self, episode_return: float) -> float:
        """`100 * (R - min) / (max - min)`: minari.get_normalized_score times 100."""
        return 100.0 * (float(episode_return) - self.min_return) / (self.max_return - self.min_return)


def d4rl_reference(env_id: str | None) -> Reference | None:
    """D4RL's random and expert returns of the env's family, or None for envs without them."""
    family = family_of(env_id)
    if family is None:
        return None
    return Reference(family.random_return, family.expert_return, f"d4rl:{env_family(env_id)}")


def normalized_score(env_id: str | None, episode_return: float) -> float | None:
    """`100 * (R - random) / (expert - random)` with D4RL's references, or None for envs without them."""
    reference = d4rl_reference(env_id)
    return None if reference is None else reference.score(episode_return)


def dt_target_return(env_id: str | None) -> float | None:
    """The target return the DT paper used for this env family (e.g. 'Hopper-v5' -> 3600), if any."""
    family = family_of(env_id)
    return family.dt_target_return if family else None
