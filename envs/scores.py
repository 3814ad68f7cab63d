"""D4RL normalized score: 0 is a random policy's return, 100 an expert's."""

# (random, expert) episode returns that D4RL uses as reference, per env family.
REFERENCE_RETURNS = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def env_family(env_id: str) -> str:
    """The lower-case env name without namespace or suffixes: 'Hopper-v5' and 'hopper-medium-v2' -> 'hopper'."""
    return env_id.rsplit("/", 1)[-1].split("-", 1)[0].lower()


def normalized_score(env_id: str, episode_return: float) -> float | None:
    """`100 * (R - random) / (expert - random)` with D4RL's references, or None for envs without them."""
    reference = REFERENCE_RETURNS.get(env_family(env_id))
    if reference is None:
        return None
    random, expert = reference
    return 100.0 * (float(episode_return) - random) / (expert - random)
