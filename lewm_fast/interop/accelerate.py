"""`accelerate`: one call that makes a stable-worldmodel program use lewm_fast.

    import lewm_fast as lf
    lf.interop.accelerate()                  # before the program imports its SIGReg / solvers
    # ... the unchanged stable-worldmodel program ...

With no argument it replaces, wherever stable_worldmodel defines or re-exports them, the public
`SIGReg` and the solvers lewm_fast has drop-ins for (`CEMSolver`, `ICEMSolver`, `MPPISolver`,
`PredictiveSamplingSolver`, `GradientSolver`), in both module layouts: `stable_worldmodel.solver.*`
(release 0.1.1) and `stable_worldmodel.planning.solver.*` (the current source). The other public
solvers (`PGDSolver`, `LagrangianSolver`, `CategoricalCEMSolver`) are left as they are: they work
unchanged, on the public model's `get_cost` or on an `lf.LeWM`'s. Finding nothing to patch warns.
A public SIGReg saved inside a whole module (`torch.save(module)`, the `*_object.ckpt` files of the
public checkpoint loader) unpickles after `accelerate()` as a working `lf.SIGReg`.

Given an object it converts that object in place or returns its replacement:
- an `nn.Module` (e.g. a training module): every public `SIGReg` submodule becomes an `lf.SIGReg`
  with the same knots and num_proj (same value and gradient, fused backend);
- a `WorldModelPolicy`: its solver becomes the drop-in of the same kind (same arguments, configured alike);
- a public solver of a replaced kind: returns the equivalent drop-in (its noise stream continued).
The returned handle's `undo()` restores patched classes.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass, field

import torch

from lewm_fast.interop.solvers import PUBLIC_SOLVERS
from lewm_fast.interop.solvers.base import DropInSolver
from lewm_fast.sigreg import SIGReg

# Where the public classes are defined (module, class name), in both layouts; and the modules that
# re-export them (patched wherever they hold the very same class object).
SIGREG_HOMES = (("stable_worldmodel.wm.loss", "SIGReg"),)
SOLVER_PACKAGES = ("stable_worldmodel.solver", "stable_worldmodel.planning.solver")
SOLVER_MODULES = {
    "CEMSolver": "cem",
    "ICEMSolver": "icem",
    "MPPISolver": "mppi",
    "PredictiveSamplingSolver": "predictive_sampling",
    "GradientSolver": "gd",
}
REEXPORTS = ("stable_worldmodel.wm", "stable_worldmodel.solver", "stable_worldmodel.planning.solver",
             "stable_worldmodel.planning")  # fmt: skip

# public class -> its replacement, for every class `accelerate()` has replaced in this process (so that
# objects built before the patch, and pickles, are still recognised after it).
_originals: dict[type, type] = {}


class AcceleratedSIGReg(SIGReg):
    """`lf.SIGReg` under the public class's name: also rebuilds a pickled public SIGReg.

    Unpickling a public module after `accelerate()` finds this class where the public one was; the
    pickled state is the public one (knots and t_max only as the buffer `t`), completed here.
    """

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "knots" not in state:  # a public SIGReg's state: buffers t, phi, weights and num_proj
            t = self._buffers["t"]
            self.knots, self.t_max = t.numel(), float(t[-1])
            self.backend, self.generator, self.distributed, self.group = "auto", None, None, None


@dataclass
class Acceleration:
    """What `accelerate()` patched; `undo()` puts the public classes back."""

    patched: list[tuple[object, str, object]] = field(default_factory=list)

    def undo(self) -> None:
        for module, name, original in reversed(self.patched):
            setattr(module, name, original)
        self.patched.clear()


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _public_homes() -> list[tuple[str, str, type]]:
    """(module, name, replacement) of every public class found, in both layouts."""
    homes = [(m, n, AcceleratedSIGReg) for m, n in SIGREG_HOMES]
    for package in SOLVER_PACKAGES:
        homes += [(f"{package}.{sub}", name, PUBLIC_SOLVERS[name]) for name, sub in SOLVER_MODULES.items()]
    return homes


def _patch_all() -> Acceleration:
    handle = Acceleration()
    for module_name, name, replacement in _public_homes():
        module = _import(module_name)
        original = getattr(module, name, None) if module is not None else None
        if original is None or original is replacement:
            continue
        _originals[original] = replacement
        for holder in (module, *filter(None, map(_import, REEXPORTS))):
            if getattr(holder, name, None) is original:
                handle.patched.append((holder, name, original))
                setattr(holder, name, replacement)
    if not handle.patched:
        warnings.warn(
            "accelerate: found no stable_worldmodel class to patch (is stable_worldmodel importable, or was "
            "accelerate() already applied?); nothing changed",
            stacklevel=3,
        )
    return handle


def _public_classes(replacement_base: type) -> tuple[type, ...]:
    """The public classes (patched or not) replaced by a subclass of `replacement_base`."""
    found = {cls for cls, rep in _originals.items() if issubclass(rep, replacement_base)}
    for module_name, name, replacement in _public_homes():
        module = _import(module_name) if issubclass(replacement, replacement_base) else None
        cls = getattr(module, name, None) if module is not None else None
        if isinstance(cls, type) and not cls.__module__.startswith("lewm_fast"):
            found.add(cls)
    return tuple(found)


def _swap_sigreg(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    public = _public_classes(SIGReg)
    if not public:
        raise ImportError("accelerate: stable_worldmodel.wm.loss.SIGReg is not importable; nothing to accelerate")

    def convert(m: torch.nn.Module) -> torch.nn.Module:
        if isinstance(m, public):
            fast = SIGReg(knots=m.t.numel(), num_proj=m.num_proj, t_max=float(m.t[-1]), backend=backend)
            return fast.to(m.t.device)
        for name, child in m.named_children():
            setattr(m, name, convert(child))
        return m

    return convert(module)


def _drop_in_for(solver) -> type | None:
    for cls in _public_classes(DropInSolver):
        if isinstance(solver, cls):
            return _originals.get(cls) or PUBLIC_SOLVERS.get(cls.__name__)
    return None


def _solver_from_public(solver, drop_in: type, backend: str, dtype) -> object:
    """The drop-in with the public solver's arguments, configuration and noise stream."""
    params = inspect.signature(drop_in.__init__).parameters  # the public ones; lewm_fast's are keyword-only
    public = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD and n not in ("self", "model", "seed")]
    kwargs = {name: getattr(solver, name) for name in public if hasattr(solver, name)}
    model = getattr(solver, "model", None) or getattr(solver, "cost", None)
    fast = drop_in(model, backend=backend, dtype=dtype, **kwargs)
    fast.torch_gen.set_state(solver.torch_gen.get_state())  # continue the public noise stream
    if getattr(solver, "_configured", False):
        fast.configure(action_space=solver._action_space, n_envs=solver._n_envs, config=solver._config)
    return fast


def accelerate(target=None, *, backend: str = "auto", dtype: torch.dtype | str = torch.float32):
    """Make stable-worldmodel code use lewm_fast (see the module docstring).

    Args:
        target: None (patch the public classes), an nn.Module, a WorldModelPolicy, or a public solver
            of a replaced kind (CEM, iCEM, MPPI, predictive sampling, gradient).
        backend: lewm_fast backend for SIGReg and the planner ("auto" = the fastest available).
        dtype: the drop-in solvers' rollout precision (torch.float32, torch.bfloat16 or "auto").
    Returns:
        An `Acceleration` handle (target None), the converted module/policy, or the new solver.
    """
    if target is None:
        return _patch_all()
    if isinstance(target, DropInSolver) or isinstance(getattr(target, "solver", None), DropInSolver):
        return target  # already lewm_fast's
    drop_in = _drop_in_for(target)
    if drop_in is not None:
        return _solver_from_public(target, drop_in, backend, dtype)
    if isinstance(target, torch.nn.Module):
        return _swap_sigreg(target, backend)
    drop_in = _drop_in_for(getattr(target, "solver", None))
    if drop_in is not None:
        target.solver = _solver_from_public(target.solver, drop_in, backend, dtype)
        return target
    raise TypeError(
        "target: expected None, an nn.Module, a WorldModelPolicy or a stable_worldmodel solver of a replaced "
        f"kind ({', '.join(PUBLIC_SOLVERS)}), got {type(target).__name__}"
    )
