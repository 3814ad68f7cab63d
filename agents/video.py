"""Offscreen video of a rollout's first episode, rendered by MuJoCo and written as MP4."""

import ctypes.util
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
from seqrl import SeqrlError
from seqrl.agents.base import Agent

GL_BACKENDS = ("egl", "osmesa", "glfw")  # the values MuJoCo's Python bindings accept
GL_FIX = "unset MUJOCO_GL (seqrl then picks EGL or OSMesa) or set it to egl or osmesa"


def choose_gl_backend() -> None:
    """Point MuJoCo at an offscreen OpenGL (EGL, else OSMesa) unless MUJOCO_GL is set; call before mujoco loads."""
    if "MUJOCO_GL" in os.environ:
        if os.environ["MUJOCO_GL"].strip().lower() not in GL_BACKENDS:
            raise SeqrlError(f"MUJOCO_GL={os.environ['MUJOCO_GL']} is not one of {', '.join(GL_BACKENDS)}; {GL_FIX}")
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
            return
    raise SeqrlError("--video needs offscreen OpenGL: install libegl1 or libosmesa6 (apt-get install libosmesa6)")


class EpisodeVideo:
    """Streams the frames of one episode of an `rgb_array` env into an MP4 file.

    With a `planner` (an agent with a model, slot 0), each frame holds the env's picture on the left and, on the
    right, the observations that its current plan expects from now on, drawn over each other and fading.
    """

    def __init__(self, path: Path, env: gym.Env, episode: int, planner: Agent | None = None):
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise SeqrlError("--video needs imageio with ffmpeg: pip install 'seqrl[video]'") from None
        if Path(path).suffix.lower() != ".mp4":
            raise SeqrlError(f"--video writes MP4; name the file *.mp4, not {Path(path).name}")
        self.plan_view = None
        if planner is not None:
            from seqrl.envs.render_state import StateRenderer  # it loads mujoco, which must follow choose_gl_backend

            self.plan_view = StateRenderer(env)  # refuses envs it cannot draw
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SeqrlError(f"cannot write --video {path} ({error.strerror}); pick a writable place") from None
        self.env, self.episode, self.path = env, episode, Path(path)
        self.planner = planner
        try:
            fps = env.metadata.get("render_fps", 30)  # ffmpeg quiet: a failure is our one-line error instead
            self.writer = imageio.get_writer(path, fps=fps, macro_block_size=8, ffmpeg_log_level="quiet")
        except Exception as error:  # imageio raises a plain RuntimeError/ImportError when ffmpeg is missing
            raise SeqrlError(f"cannot write {path} ({error}); pip install 'seqrl[video]'") from None
        self.frames = 0
        self.written = False  # the file was finished and holds the frames

    def add_frame(self, episodes: list[int]) -> None:
        """Render the env now if the episode being filmed is running in it."""
        if self.writer is not None and self.episode in episodes:
            frame = self._render()
            try:
                self.writer.append_data(frame)
            except Exception as error:  # ffmpeg exits when it cannot write the file: a broken pipe, an OSError
                self.writer = None
                raise SeqrlError(
                    f"cannot write --video {self.path} ({first_line(error)}); pick a writable place"
                ) from None
            self.frames += 1

    def _render(self) -> np.ndarray:
        """The env's frame, (height, width, 3) uint8, or a one-line error when MuJoCo has no OpenGL context."""
        with warnings.catch_warnings(record=True) as caught:  # glfw warns the cause (no DISPLAY), then fails
            warnings.simplefilter("always")
            try:
                frame = self.env.render()
                if self.plan_view is None:
                    return frame
                plan = self.planner.plan(0)
                return np.concatenate([frame, self.plan_view.render(np.empty((0, 0)) if plan is None else plan)], 1)
            except Exception as error:  # glfw without a display, a broken EGL or OSMesa
                cause = str(caught[0].message) if caught else first_line(error)
        self.close()
        raise SeqrlError(f"cannot render --video with MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({cause}); {GL_FIX}")

    def close(self) -> None:
        """Finish the file, or a one-line error if it was not written; further frames are ignored."""
        if self.plan_view is not None:
            self.plan_view.close()
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.close()
        except Exception as error:
            raise SeqrlError(f"cannot write --video {self.path} ({first_line(error)}); pick a writable place") from None
        if self.frames and (not self.path.is_file() or self.path.stat().st_size == 0):
            raise SeqrlError(f"--video {self.path} was not written; pick a writable place")
        self.written = self.frames > 0


def first_line(error: Exception) -> str:
    """The first line of an error's message (ffmpeg and OpenGL errors run to many), else its type."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
