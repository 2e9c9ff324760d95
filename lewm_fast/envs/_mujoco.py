"""What the MuJoCo environments (reacher, cube) share: headless rendering and a clear error when an optional
package is missing.

Rendering: MuJoCo needs an OpenGL context. Without a display we ask for EGL (`MUJOCO_GL=egl`), which Mesa
provides in software (llvmpipe) on a machine without a GPU, and the GPU's driver on one with. The variable
must be set before `mujoco` is first imported, so every MuJoCo env imports its packages through
`import_optional`. A user's own `MUJOCO_GL` (`osmesa`, `glfw`) is left alone.
"""

from __future__ import annotations

import importlib
import os

DEFAULT_GL = "egl"


def import_optional(module: str, env: str, extra: str, package: str):
    """`importlib.import_module(module)`, or an ImportError naming the package and the pip extra to install."""
    os.environ.setdefault("MUJOCO_GL", DEFAULT_GL)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"env '{env}' needs the {package} package: pip install 'lewm-fast[{extra}]' ({type(e).__name__}: {e})"
        ) from e


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
