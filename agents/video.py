"""Offscreen video of a rollout's first episode, rendered by MuJoCo and written as MP4."""

import ctypes.util
import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from seqrl import SeqrlError


def choose_gl_backend() -> None:
    """Point MuJoCo at an offscreen OpenGL (EGL, else OSMesa) unless MUJOCO_GL is set; call before mujoco loads."""
    if "MUJOCO_GL" in os.environ:
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
            return
    raise SeqrlError("--video needs offscreen OpenGL: install libegl1 or libosmesa6 (apt-get install libosmesa6)")


class EpisodeVideo:
    """Streams the frames of one episode of an `rgb_array` env into an MP4 file."""

    def __init__(self, path: Path, env: gym.Env, episode: int):
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise SeqrlError("--video needs imageio with ffmpeg: pip install 'seqrl[video]'") from None
        if Path(path).suffix.lower() != ".mp4":
            raise SeqrlError(f"--video writes MP4; name the file *.mp4, not {Path(path).name}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.env, self.episode, self.path = env, episode, Path(path)
        try:
            self.writer = imageio.get_writer(path, fps=env.metadata.get("render_fps", 30), macro_block_size=8)
        except Exception as error:  # imageio raises a plain RuntimeError/ImportError when ffmpeg is missing
            raise SeqrlError(f"cannot write {path} ({error}); pip install 'seqrl[video]'") from None
        self.frames = 0

    def add_frame(self, episodes: list[int]) -> None:
        """Render the env now if the episode being filmed is running in it."""
        if self.writer is not None and self.episode in episodes:
            frame: np.ndarray = self.env.render()  # (height, width, 3) uint8
            self.writer.append_data(frame)
            self.frames += 1

    def close(self) -> None:
        """Finish the file; further frames are ignored."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
