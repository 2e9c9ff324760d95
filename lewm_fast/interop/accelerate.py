"""`accelerate`: one call that makes a stable-worldmodel program use lewm_fast.

    import lewm_fast as lf
    lf.interop.accelerate()                  # before the program builds its SIGReg / CEMSolver
    # ... the unchanged stable-worldmodel program ...

With no argument it replaces the public `SIGReg` and `CEMSolver` classes in the stable_worldmodel
modules by lewm_fast's (same constructor arguments), so objects built afterwards are fast. Given an
object it converts that object in place or returns its replacement:
- an `nn.Module` (e.g. a training module): every public `SIGReg` submodule becomes an `lf.SIGReg`
  with the same knots and num_proj (same value and gradient, fused backend);
- a `WorldModelPolicy`: its solver becomes an `lf.interop.CEMSolver` (same arguments, configured alike);
- a public `CEMSolver`: returns the equivalent `lf.interop.CEMSolver`.
The returned handle's `undo()` restores patched classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch

from lewm_fast.interop.solver import CEMSolver
from lewm_fast.sigreg import SIGReg

# (module, attribute) pairs that hold the public classes (re-exports included).
SIGREG_HOMES = (("stable_worldmodel.wm.loss", "SIGReg"), ("stable_worldmodel.wm", "SIGReg"))
SOLVER_HOMES = (("stable_worldmodel.solver.cem", "CEMSolver"), ("stable_worldmodel.solver", "CEMSolver"))


@dataclass
class Acceleration:
    """What `accelerate()` patched; `undo()` puts the public classes back."""

    patched: list[tuple[object, str, object]] = field(default_factory=list)

    def undo(self) -> None:
        for module, name, original in reversed(self.patched):
            setattr(module, name, original)
        self.patched.clear()


def _public_class(homes):
    for module_name, attr in homes:
        try:
            cls = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            continue
        if cls is not None and not getattr(cls, "__module__", "").startswith("lewm_fast"):
            return cls
    return None


def _swap_sigreg(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    public = _public_class(SIGREG_HOMES)
    if public is None:
        raise ImportError("accelerate: stable_worldmodel is not importable; nothing to accelerate")

    def convert(m: torch.nn.Module) -> torch.nn.Module:
        if isinstance(m, public):
            fast = SIGReg(knots=m.t.numel(), num_proj=m.num_proj, t_max=float(m.t[-1]), backend=backend)
            return fast.to(m.t.device)
        for name, child in m.named_children():
            setattr(m, name, convert(child))
        return m

    return convert(module)


def _solver_from_public(solver, backend: str, dtype: torch.dtype) -> CEMSolver:
    fast = CEMSolver(
        solver.model, batch_size=solver.batch_size, num_samples=solver.num_samples, var_scale=solver.var_scale,
        n_steps=solver.n_steps, topk=solver.topk, device=solver.device, backend=backend, dtype=dtype,
    )  # fmt: skip
    # Continue the public solver's noise stream rather than restarting it.
    fast.torch_gen.set_state(solver.torch_gen.get_state())
    if getattr(solver, "_configured", False):
        fast.configure(action_space=solver._action_space, n_envs=solver._n_envs, config=solver._config)
    return fast


def accelerate(target=None, *, backend: str = "auto", dtype: torch.dtype = torch.float32):
    """Make stable-worldmodel code use lewm_fast (see the module docstring).

    Args:
        target: None (patch the public classes), an nn.Module, a WorldModelPolicy, or a public CEMSolver.
        backend: lewm_fast backend for SIGReg and the planner ("auto" = the fastest available).
        dtype: planning dtype (torch.float32 or torch.bfloat16).
    Returns:
        An `Acceleration` handle (target None), the converted module/policy, or the new solver.
    """
    if target is None:
        handle = Acceleration()
        for homes, replacement in ((SIGREG_HOMES, SIGReg), (SOLVER_HOMES, CEMSolver)):
            for module_name, attr in homes:
                try:
                    module = importlib.import_module(module_name)
                except ImportError:
                    continue
                if hasattr(module, attr):
                    handle.patched.append((module, attr, getattr(module, attr)))
                    setattr(module, attr, replacement)
        if not handle.patched:
            raise ImportError("accelerate: stable_worldmodel is not importable; nothing to accelerate")
        return handle
    public_solver = _public_class(SOLVER_HOMES)
    if public_solver is not None and isinstance(target, public_solver):
        return _solver_from_public(target, backend, dtype)
    if isinstance(target, torch.nn.Module):
        return _swap_sigreg(target, backend)
    if public_solver is not None and isinstance(getattr(target, "solver", None), public_solver):
        target.solver = _solver_from_public(target.solver, backend, dtype)
        return target
    raise TypeError(
        "target: expected None, an nn.Module, a WorldModelPolicy or a stable_worldmodel CEMSolver, "
        f"got {type(target).__name__}"
    )
