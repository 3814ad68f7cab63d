"""Build gymnasium MuJoCo environments by id, with checks and a quiet terminal."""

import difflib
import logging

import gymnasium as gym
from seqrl import SeqrlError

log = logging.getLogger(__name__)

# gymnasium's own half_cheetah.xml still uses this attribute; MuJoCo 4 warns about it on every build.
KNOWN_HARMLESS_WARNING = "'settotalmass' is deprecated"


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """A gymnasium env with Box observation and action spaces, or a one-line error."""
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else "MuJoCo tasks include Hopper-v5, HalfCheetah-v5, Walker2d-v5, Ant-v5"
        )
        raise SeqrlError(f"unknown env {env_id!r}: {hint}")
    route_mujoco_warnings()
    try:
        env = gym.make(env_id, render_mode=render_mode)
    except (gym.error.Error, ImportError) as error:  # e.g. the old -v3 ids need packages seqrl does not ship
        raise SeqrlError(f"cannot build {env_id}: {str(error).splitlines()[0]}") from None
    try:
        check_box_spaces(env.observation_space, env.action_space, env_id)
    except SeqrlError:
        env.close()
        raise
    return env


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of `env_id` stepped together; each copy resets only when told to."""
    if num_envs < 1:
        raise SeqrlError(f"num_envs must be at least 1, got {num_envs}")
    return gym.vector.SyncVectorEnv(
        [lambda: make_env(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )


def check_box_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """Raise unless both spaces are 1-D Boxes, which every seqrl agent needs."""
    for role, space in (("observation", observation_space), ("action", action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise SeqrlError(f"{env_id} has a {space} {role} space; seqrl needs flat Box spaces (MuJoCo control tasks)")


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to Python logging instead of stderr plus a MUJOCO_LOG.TXT in the cwd."""
    import mujoco

    if mujoco.get_mju_user_warning() is None:  # leave a handler the user installed alone
        mujoco.set_mju_user_warning(_log_mujoco_warning)


def _log_mujoco_warning(message: str) -> None:
    # Called from MuJoCo's C code: it must not raise, so log rather than warnings.warn (-W error raises).
    if KNOWN_HARMLESS_WARNING not in message:
        log.warning("MuJoCo warning: %s", message)


def env_identity(env: gym.Env | gym.vector.VectorEnv) -> tuple[str | None, gym.Space, gym.Space]:
    """The env id and the observation and action spaces of one env, for a single or a vector env alike."""
    if isinstance(env, gym.vector.VectorEnv):
        spec = env.get_attr("spec")[0]
        return (spec.id if spec else None), env.single_observation_space, env.single_action_space
    return (env.spec.id if env.spec else None), env.observation_space, env.action_space
