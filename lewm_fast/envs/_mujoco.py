"""What the MuJoCo environments (reacher, cube) share: headless rendering, its look, and a clear error when an
optional package is missing.

Rendering: MuJoCo needs an OpenGL context. Without a display we ask for EGL (`MUJOCO_GL=egl`), which Mesa
provides in software (llvmpipe) on a machine without a GPU, and the GPU's driver on one with. The variable
must be set before `mujoco` is first imported, so every MuJoCo env imports its packages through
`import_optional` (a program that imports mujoco itself first must set MUJOCO_GL=egl itself). A user's own
`MUJOCO_GL` (`osmesa`, `glfw`) is left alone.

Look: an env made with image_size >= 128 draws the public look (shadows, reflections, 4x multisampling, as
the public envs render their 224 px frames). A smaller env draws without them: in software rendering that
is several times cheaper per frame (benchmarks/results/design_choices-history.json), which is what makes a
CPU-sized data set affordable. The rule depends on the env's
image size only, so data and evaluation at one size always share one look.
"""

from __future__ import annotations

import importlib
import os

DEFAULT_GL = "egl"
PUBLIC_LOOK_FROM = 128  # px (module docstring)


def public_look(image_size: int) -> bool:
    return image_size >= PUBLIC_LOOK_FROM


def set_look(mujoco, model, scene_flags, public: bool) -> None:
    """Shadows, reflections and multisampling on (the public look) or off. `model.vis.quality.offsamples` is
    read when a GL context is made: call this before the first render."""
    model.vis.quality.offsamples = 4 if public else 0
    if scene_flags is not None:
        scene_flags[mujoco.mjtRndFlag.mjRND_SHADOW] = public
        scene_flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = public


def import_optional(module: str, env: str, extra: str, package: str):
    """`importlib.import_module(module)`, or an ImportError naming the package and the pip extra to install."""
    os.environ.setdefault("MUJOCO_GL", DEFAULT_GL)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"env '{env}' needs the {package} package: pip install 'lewm-fast[{extra}]' ({type(e).__name__}: {e})"
        ) from e


def step_result(env) -> tuple:
    """gymnasium's step return after an env step: (state, reward 0, never terminated, truncated at
    max_episode_steps, info with is_success against the env's goal)."""
    env.steps += 1
    info = env._info()
    info["is_success"] = env.is_success()
    truncated = env.max_episode_steps is not None and env.steps >= env.max_episode_steps
    return env.get_state(), 0.0, False, bool(truncated), info


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
    return image_size


def rgb255(colour, name: str) -> tuple[float, float, float]:
    """An RGB colour given as three numbers in 0..255 -> three floats in 0..1 (MuJoCo's rgba scale)."""
    c = tuple(float(v) for v in colour)
    if len(c) != 3 or not all(0.0 <= v <= 255.0 for v in c):
        raise ValueError(f"{name}: expected three numbers in 0..255 (RGB), got {colour!r}")
    return tuple(v / 255.0 for v in c)
