"""`lf.interop.accelerate()`: both module layouts of stable-worldmodel (0.1.1's `stable_worldmodel.solver`
and the current `stable_worldmodel.planning.solver`, the latter as a fake module tree: it cannot be
installed beside 0.1.1), the warning when nothing is found, classes left alone, pickled public SIGRegs,
and converting a module after a global patch. The same on the real 0.1.1 package: peer tests at the end."""

import io
import sys
import types
import warnings

import pytest
import torch
from helpers import rel_err

import lewm_fast as lf
from lewm_fast.interop.accelerate import AcceleratedSIGReg

SOLVERS = {"CEMSolver": "cem", "ICEMSolver": "icem", "MPPISolver": "mppi",
           "PredictiveSamplingSolver": "predictive_sampling", "GradientSolver": "gd"}  # fmt: skip
LEFT_ALONE = {"PGDSolver": "pgd", "LagrangianSolver": "lagrangian", "CategoricalCEMSolver": "categorical_cem"}


def public_sigreg_class(module_name="stable_worldmodel.wm.loss"):
    """A class with the public SIGReg's constructor, state and formula, importable as the public one."""

    class SIGReg(torch.nn.Module):
        def __init__(self, knots=17, num_proj=1024):
            super().__init__()
            self.num_proj = num_proj
            t = torch.linspace(0, 3, knots, dtype=torch.float32)
            dt = 3 / (knots - 1)
            weights = torch.full((knots,), 2 * dt, dtype=torch.float32)
            weights[[0, -1]] = dt
            window = torch.exp(-t.square() / 2.0)
            self.register_buffer("t", t)
            self.register_buffer("phi", window)
            self.register_buffer("weights", weights * window)

        def forward(self, proj):
            a = torch.randn(proj.size(-1), self.num_proj, device=proj.device)
            a = a.div_(a.norm(p=2, dim=0))
            x_t = (proj @ a).unsqueeze(-1) * self.t
            err = (x_t.cos().mean(-3) - self.phi).square() + x_t.sin().mean(-3).square()
            return ((err @ self.weights) * proj.size(-2)).mean()

    SIGReg.__module__, SIGReg.__qualname__ = module_name, "SIGReg"
    return SIGReg


@pytest.fixture
def fake_layout(monkeypatch):
    """stable_worldmodel's current layout as modules in sys.modules (the installed package hidden)."""
    for name in [n for n in sys.modules if n == "stable_worldmodel" or n.startswith("stable_worldmodel.")]:
        monkeypatch.delitem(sys.modules, name)

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    classes = {name: type(name, (), {"__module__": f"stable_worldmodel.planning.solver.{sub}"})
               for name, sub in {**SOLVERS, **LEFT_ALONE}.items()}  # fmt: skip
    sigreg = public_sigreg_class()
    module("stable_worldmodel")
    module("stable_worldmodel.wm.loss", SIGReg=sigreg)
    module("stable_worldmodel.wm", SIGReg=sigreg)
    for name, sub in {**SOLVERS, **LEFT_ALONE}.items():
        module(f"stable_worldmodel.planning.solver.{sub}", **{name: classes[name]})
    module("stable_worldmodel.planning.solver", **classes)
    module("stable_worldmodel.planning", **classes)
    return types.SimpleNamespace(classes=classes, sigreg=sigreg, modules=sys.modules)


def test_current_layout_is_patched_everywhere_and_undone(fake_layout):
    handle = lf.interop.accelerate()
    try:
        mods = fake_layout.modules
        for name, sub in SOLVERS.items():
            drop_in = getattr(lf.interop, name)
            for where in (f"stable_worldmodel.planning.solver.{sub}", "stable_worldmodel.planning.solver",
                          "stable_worldmodel.planning"):  # fmt: skip
                assert getattr(mods[where], name) is drop_in, (where, name)
        for name, sub in LEFT_ALONE.items():
            assert getattr(mods[f"stable_worldmodel.planning.solver.{sub}"], name) is fake_layout.classes[name]
            assert getattr(mods["stable_worldmodel.planning"], name) is fake_layout.classes[name]
        assert mods["stable_worldmodel.wm.loss"].SIGReg is AcceleratedSIGReg
        assert mods["stable_worldmodel.wm"].SIGReg is AcceleratedSIGReg
        assert len(handle.patched) == 3 * len(SOLVERS) + 2
    finally:
        handle.undo()
    assert fake_layout.modules["stable_worldmodel.planning"].CEMSolver is fake_layout.classes["CEMSolver"]
    assert fake_layout.modules["stable_worldmodel.wm.loss"].SIGReg is fake_layout.sigreg


def test_nothing_to_patch_warns(monkeypatch):
    for name in [n for n in sys.modules if n == "stable_worldmodel" or n.startswith("stable_worldmodel.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "stable_worldmodel", None)  # not importable
    with pytest.warns(UserWarning, match="accelerate: found no stable_worldmodel class to patch"):
        handle = lf.interop.accelerate()
    assert handle.patched == []


def test_a_second_global_call_warns_and_changes_nothing(fake_layout):
    handle = lf.interop.accelerate()
    try:
        with pytest.warns(UserWarning, match="already applied"):
            again = lf.interop.accelerate()
        assert again.patched == []
    finally:
        handle.undo()


def test_module_after_a_global_patch(fake_layout):
    """The public SIGReg class is remembered: a module holding one built before the patch converts."""
    module = torch.nn.Module()
    module.reg = fake_layout.sigreg(knots=9, num_proj=64)
    x = torch.randn(4, 16, 24)
    torch.manual_seed(2)
    expected = module.reg(x)
    handle = lf.interop.accelerate()
    try:
        lf.interop.accelerate(module, backend="reference")
    finally:
        handle.undo()
    assert isinstance(module.reg, lf.SIGReg) and module.reg.knots == 9 and module.reg.num_proj == 64
    torch.manual_seed(2)
    assert rel_err(module.reg(x), expected) <= 1e-5


def test_a_pickled_public_sigreg_loads_as_a_working_lf_sigreg(fake_layout):
    """A whole module saved with torch.save (the public `*_object.ckpt` files) unpickles after the patch."""
    module = torch.nn.Sequential(torch.nn.Linear(3, 3))
    module.reg = fake_layout.sigreg(knots=9, num_proj=64)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    x = torch.randn(2, 32, 24)
    torch.manual_seed(4)
    expected = module.reg(x)
    handle = lf.interop.accelerate()
    try:
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)  # our own pickle, written just above
    finally:
        handle.undo()
    assert isinstance(loaded.reg, AcceleratedSIGReg) and (loaded.reg.knots, loaded.reg.num_proj) == (9, 64)
    torch.manual_seed(4)
    assert rel_err(loaded.reg(x), expected) <= 1e-5
    buffer = io.BytesIO()
    torch.save(loaded, buffer)  # and it pickles again, as lewm_fast's class
    buffer.seek(0)
    assert isinstance(torch.load(buffer, weights_only=False).reg, AcceleratedSIGReg)


def test_drop_ins_and_their_policies_are_returned_as_they_are():
    solver = lf.interop.CEMSolver(types.SimpleNamespace(get_cost=lambda d, c: c.sum((-1, -2))))
    assert lf.interop.accelerate(solver) is solver
    policy = types.SimpleNamespace(solver=solver)
    assert lf.interop.accelerate(policy) is policy and policy.solver is solver


def test_a_target_of_no_known_kind_is_refused():
    with pytest.raises(TypeError, match="target: expected None, an nn.Module, a WorldModelPolicy"):
        lf.interop.accelerate(object())


# ---- peer: the installed stable-worldmodel 0.1.1 --------------------------------------------------


@pytest.fixture
def swm():
    return pytest.importorskip("stable_worldmodel.solver", reason="needs stable_worldmodel")


@pytest.mark.peer
def test_release_layout_patched_and_the_rest_left_working(swm):
    import stable_worldmodel.wm as wm
    import stable_worldmodel.wm.loss as loss

    before = {name: getattr(swm, name) for name in (*SOLVERS, *LEFT_ALONE)}
    handle = lf.interop.accelerate()
    try:
        for name, sub in SOLVERS.items():
            assert getattr(swm, name) is getattr(lf.interop, name)
            assert getattr(sys.modules[f"stable_worldmodel.solver.{sub}"], name) is getattr(lf.interop, name)
        for name in LEFT_ALONE:
            assert getattr(swm, name) is before[name]
        assert loss.SIGReg is AcceleratedSIGReg and wm.SIGReg is AcceleratedSIGReg
    finally:
        handle.undo()
    assert {name: getattr(swm, name) for name in before} == before


@pytest.mark.peer
def test_release_pickle_and_module_after_global_patch(swm):
    from stable_worldmodel.wm.loss import SIGReg as PublicSIGReg

    module = torch.nn.Module()
    module.reg = PublicSIGReg(knots=9, num_proj=64)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    x = torch.randn(4, 16, 24)
    torch.manual_seed(2)
    expected = module.reg(x)
    handle = lf.interop.accelerate()
    try:
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)  # our own pickle, written just above
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lf.interop.accelerate(module)
    finally:
        handle.undo()
    for reg in (loaded.reg, module.reg):
        assert isinstance(reg, lf.SIGReg)
        torch.manual_seed(2)
        assert rel_err(reg(x), expected) <= 1e-5
