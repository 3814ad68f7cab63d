"""Set observations of a MuJoCo env into a second copy of its state and render them offscreen as its camera sees."""

import gymnasium as gym
import mujoco
import numpy as np
from seqrl import SeqrlError

FIRST_ALPHA, LAST_ALPHA = 1.0, 0.2  # opacity of the first and of the last of several states drawn over each other


class StateRenderer:
    """Draws observations (joint positions without the skipped ones, then velocities) of a gymnasium MuJoCo env.

    The positions an observation leaves out (x of Hopper, HalfCheetah and Walker2d; x and y of Ant) start at the
    real env's and advance by each observed velocity times the env's step `dt`, so a sequence of states moves
    along the floor as the observations say it does.
    """

    def __init__(self, env: gym.Env):
        base = env.unwrapped
        structure = getattr(base, "observation_structure", None)
        model = getattr(base, "model", None)
        if (
            model is None
            or structure is None
            or set(structure) != {"skipped_qpos", "qpos", "qvel"}
            or (structure["skipped_qpos"] + structure["qpos"], structure["qvel"]) != (model.nq, model.nv)
        ):
            raise SeqrlError(
                f"cannot draw states of {env.spec.id if env.spec else env}: its observations are not just joint "
                "positions and velocities (Hopper, HalfCheetah, Walker2d and the like are)"
            )
        self.model, self.real = model, base.data
        self.skipped, self.positions = structure["skipped_qpos"], structure["qpos"]
        self.dt = base.dt
        self.data = mujoco.MjData(model)  # the second state: the real env's stays untouched
        self.camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(model, self.camera)
        for key, value in (base.mujoco_renderer.default_cam_config or {}).items():  # as gymnasium sets its own
            if isinstance(value, np.ndarray):
                getattr(self.camera, key)[:] = value
            else:
                setattr(self.camera, key, value)
        self.option, self.perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        self.size = (base.height, base.width)
        self.renderer: mujoco.Renderer | None = None  # its OpenGL context is made on the first frame

    def render(self, observations: np.ndarray) -> np.ndarray:
        """Frame (height, width, 3) uint8 of observations (steps, obs_dim) over each other, later ones fainter."""
        observations = np.asarray(observations, dtype=np.float64)
        if self.renderer is None:
            self.renderer = mujoco.Renderer(self.model, *self.size)
        scene = self.renderer.scene
        # the floor and lights as the real env has them, then each state's bodies, alphas FIRST_ALPHA to LAST_ALPHA
        mujoco.mjv_updateScene(
            self.model, self.real, self.option, None, self.camera, mujoco.mjtCatBit.mjCAT_STATIC, scene
        )
        skipped = self.real.qpos[: self.skipped].copy()
        alphas = np.linspace(FIRST_ALPHA, LAST_ALPHA, len(observations)) if len(observations) > 1 else [FIRST_ALPHA]
        for index, (observation, alpha) in enumerate(zip(observations, alphas)):
            velocities = observation[self.positions :]
            if index:
                skipped = skipped + self.dt * velocities[: self.skipped]
            self.data.qpos[:] = np.concatenate([skipped, observation[: self.positions]])
            self.data.qvel[:] = velocities
            mujoco.mj_forward(self.model, self.data)
            first = scene.ngeom
            mujoco.mjv_addGeoms(self.model, self.data, self.option, self.perturb, mujoco.mjtCatBit.mjCAT_DYNAMIC, scene)
            for geom in range(first, scene.ngeom):
                scene.geoms[geom].rgba[3] *= alpha
        return self.renderer.render()

    def close(self) -> None:
        """Free the OpenGL context, if one was made."""
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
