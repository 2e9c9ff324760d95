"""The optimizers of `lewm_fast.planning.optimizers` on their own (no model): the registry and its
defaults, bad parameters, the loop's chunking and callbacks, no host sync in any update, and each
optimizer's defining behaviour on a cost whose optimum is known."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lewm_fast.planning import ops
from lewm_fast.planning.optimizers import (
    available_optimizers,
    make_optimizer,
    optimizer_defaults,
    optimizer_params,
    solve_chunks,
)
from lewm_fast.planning.optimizers.icem import coloured_noise

# The public solvers' defaults (stable-worldmodel 0.1.1 signatures; the gradient solver's n_steps has no
# default there, 30 is its planning config's). test_solvers_peer.py checks them against the live classes.
PUBLIC_DEFAULTS = {
    "cem": dict(num_samples=300, var_scale=1, n_steps=30, topk=30),
    "icem": dict(
        num_samples=300, var_scale=1, n_steps=30, topk=30, noise_beta=2.0, alpha=0.1, n_elite_keep=5, return_mean=True
    ),  # fmt: skip
    "mppi": dict(num_samples=300, var_scale=1.0, n_steps=30, topk=30, temperature=0.5),
    "ps": dict(num_samples=300, noise_scale=1.0),
    "grad": dict(
        n_steps=30,
        num_samples=1,
        var_scale=1,
        action_noise=0.0,
        optimizer_cls=torch.optim.SGD,
        optimizer_kwargs=None,
        grad_clip=None,
    ),  # fmt: skip
}


def test_registry_names_and_public_defaults():
    assert available_optimizers() == ["cem", "icem", "mppi", "ps", "grad"]
    for name, expected in PUBLIC_DEFAULTS.items():
        got = {k: v for k, v in optimizer_defaults(name).items() if k not in ("action_low", "action_high")}
        assert got == expected, name
    assert make_optimizer("grad").kwargs == {"lr": 1.0}


@pytest.mark.parametrize(
    "name, params, culprit",
    [
        ("cem", dict(var_scale=float("inf")), "var_scale"),
        ("cem", dict(var_scale=float("nan")), "var_scale"),
        ("cem", dict(num_samples=0), "num_samples"),
        ("cem", dict(topk=301), "topk"),
        ("cem", dict(n_steps=0), "n_steps"),
        ("icem", dict(alpha=1.5), "alpha"),
        ("icem", dict(n_elite_keep=-1), "n_elite_keep"),
        ("icem", dict(noise_beta=float("nan")), "noise_beta"),
        ("icem", dict(action_low=torch.zeros(10)), "action_low"),
        ("mppi", dict(temperature=0.0), "temperature"),
        ("mppi", dict(topk=0), "topk"),
        ("ps", dict(noise_scale=-1.0), "noise_scale"),
        ("grad", dict(grad_clip=0.0), "grad_clip"),
        ("grad", dict(action_noise=float("inf")), "action_noise"),
    ],
)
def test_bad_parameters_name_the_parameter(name, params, culprit):
    with pytest.raises(ValueError, match=culprit):
        make_optimizer(name, **params)


def test_unknown_parameter_and_solver_are_refused():
    with pytest.raises(TypeError, match="temperature"):
        make_optimizer("cem", temperature=0.5)
    with pytest.raises(ValueError, match="solver"):
        make_optimizer("pgd")
    with pytest.raises(TypeError, match="optimizer_cls"):
        make_optimizer("grad", optimizer_cls=dict)
    assert "noise_scale" in optimizer_params("ps")


def quadratic(target):
    """cost(cand) = sum over (T, A) of (cand - target)^2 per environment: target (E, T, A)."""
    return lambda cand: (cand - target[:, None]).square().flatten(2).sum(-1)


def run(name, target, batch_size=None, seed=0, **params):
    opt = make_optimizer(name, **params)
    mean = torch.zeros_like(target)
    gen = torch.Generator().manual_seed(seed)
    return solve_chunks(opt, mean, torch.full_like(mean, opt.initial_std), lambda lo, hi: quadratic(target[lo:hi]),
                        gen, batch_size=batch_size)  # fmt: skip


@pytest.mark.parametrize("name", ["cem", "icem", "mppi"])
def test_iterative_optimizers_find_the_optimum(name):
    target = torch.rand(3, 5, 4) - 0.5
    extra = dict(var_scale=0.1) if name == "mppi" else {}  # MPPI keeps its std: a small one to converge
    out = run(name, target, num_samples=200, topk=20, n_steps=30, **extra)
    start = target.square().flatten(1).sum(1)
    assert (out.actions - target).square().flatten(1).sum(1).max() < 0.05 * start.min()


def test_predictive_sampling_returns_the_best_draw():
    target = torch.rand(2, 5, 4) - 0.5
    opt = make_optimizer("ps", num_samples=50)
    gen = torch.Generator().manual_seed(3)
    state = opt.init(torch.zeros(2, 5, 4), torch.ones(2, 5, 4))
    cand = opt.candidates(state, gen)
    assert (cand[:, 0] == 0).all()
    costs = quadratic(target)(cand)
    state, _ = opt.update(state, cand, costs)
    best = costs.argmin(1)
    assert torch.equal(state.mean, cand[torch.arange(2), best]) and torch.equal(state.cost, costs.min(1).values)


def test_gradient_descent_converges_and_returns_the_lowest_cost_sample():
    target = torch.rand(2, 5, 4) - 0.5
    out = run("grad", target, num_samples=4, optimizer_kwargs=dict(lr=0.1), n_steps=40)
    assert (out.actions - target).abs().max() < 1e-3
    assert len(out.history) == 1 and len(out.history[0]) == 40 and out.history[0][-1] < out.history[0][0]


def test_chunks_draw_in_the_public_order():
    """batch_size 1: each environment solved alone, one generator, chunk after chunk; so environment 1
    of a 2-environment solve equals a solve of environment 1 alone after environment 0's draws."""
    target = torch.rand(2, 5, 4) - 0.5
    both = run("cem", target, batch_size=1, num_samples=20, topk=4, n_steps=3)
    gen = torch.Generator().manual_seed(0)
    opt = make_optimizer("cem", num_samples=20, topk=4, n_steps=3)
    outs = [
        solve_chunks(
            opt, torch.zeros(1, 5, 4), torch.ones(1, 5, 4), lambda lo, hi, i=i: quadratic(target[i : i + 1]), gen
        )  # fmt: skip
        for i in range(2)
    ]
    assert torch.equal(both.actions, torch.cat([o.actions for o in outs]))
    joint = run("cem", target, batch_size=None, num_samples=20, topk=4, n_steps=3)
    assert not torch.equal(joint.actions, both.actions)  # one chunk draws (2, S, T, A) at once


def test_loop_calls_the_cost_factory_once_per_chunk_and_the_callback_per_step():
    target = torch.rand(5, 5, 4) - 0.5
    chunks, steps = [], []
    opt = make_optimizer("icem", num_samples=16, topk=4, n_steps=3)

    def chunk_cost(lo, hi):
        chunks.append((lo, hi))
        return quadratic(target[lo:hi])

    def callback(**kw):
        steps.append(kw)

    mean = torch.zeros(5, 5, 4)
    solve_chunks(opt, mean, torch.ones_like(mean), chunk_cost, torch.Generator(), batch_size=2, callback=callback)
    assert chunks == [(0, 2), (2, 4), (4, 5)]
    assert [s["step"] for s in steps] == [0, 1, 2] * 3
    expected_keys = {"step", "candidates", "costs", "topk_vals", "topk_inds", "topk_candidates", "mean", "var",
                     "prev_mean", "prev_var", "action_low", "action_high"}  # fmt: skip
    assert set(steps[0]) == expected_keys
    assert steps[-1]["candidates"].shape == (1, 16, 5, 4) and steps[-1]["topk_candidates"].shape == (1, 4, 5, 4)


def test_bad_costs_and_batch_size_are_refused():
    opt = make_optimizer("cem", num_samples=8, topk=2, n_steps=1)
    mean = torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match="cost: expected shape"):
        solve_chunks(opt, mean, torch.ones_like(mean), lambda lo, hi: lambda c: c.sum(-1), torch.Generator())
    with pytest.raises(ValueError, match="batch_size"):
        solve_chunks(opt, mean, torch.ones_like(mean), lambda lo, hi: quadratic(mean), torch.Generator(), batch_size=0)


def test_icem_injects_elites_and_clips_to_the_box():
    low, high = torch.full((4,), -0.2), torch.full((4,), 0.3)
    opt = make_optimizer("icem", num_samples=32, topk=6, n_elite_keep=3, action_low=low, action_high=high)
    gen = torch.Generator().manual_seed(0)
    state = opt.init(torch.zeros(2, 5, 4), torch.ones(2, 5, 4))
    cand = opt.candidates(state, gen)
    assert cand.min() >= -0.2 and cand.max() <= 0.3 and (cand == 0.3).any()
    state, info = opt.update(state, cand, quadratic(torch.full((2, 5, 4), 0.1))(cand))
    nxt = opt.candidates(state, gen)
    assert torch.equal(nxt[:, 1:4], info["topk_candidates"][:, :3])
    assert torch.allclose(state.mean, 0.1 * 0 + 0.9 * info["topk_candidates"].mean(1))


def test_coloured_noise_is_unit_variance_and_low_frequency():
    gen = torch.Generator().manual_seed(0)
    red = coloured_noise((4, 2000, 16, 3), 2.0, gen, "cpu", torch.float32)
    white = coloured_noise((4, 2000, 16, 3), 0.0, gen, "cpu", torch.float32)
    assert torch.allclose(red.std(dim=2), torch.ones(()), atol=1e-5)
    lag1 = lambda x: (x[:, :, 1:] * x[:, :, :-1]).mean()  # noqa: E731
    assert lag1(red) > 0.5 and abs(lag1(white)) < 0.1


def test_mppi_keeps_the_std_and_weights_the_elites():
    opt = make_optimizer("mppi", num_samples=64, topk=8, temperature=1e-4)
    gen = torch.Generator().manual_seed(0)
    state = opt.init(torch.zeros(2, 5, 4), torch.full((2, 5, 4), 0.7))
    cand = opt.candidates(state, gen)
    costs = quadratic(torch.full((2, 5, 4), 0.2))(cand)
    new, info = opt.update(state, cand, costs)
    assert torch.equal(new.std, state.std) and info["weights"].shape == (2, 8)
    assert torch.allclose(new.mean, cand[torch.arange(2), costs.argmin(1)], atol=1e-5)  # tiny temperature: argmin


class NoHostSync(TorchDispatchMode):
    """Fails on the ops that make a host wait for a device: .item(), data-dependent shapes."""

    SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "item", "is_nonzero")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in self.SYNCING:
            raise AssertionError(f"host sync in a solve: aten.{name}")
        if name == "index" and any(getattr(t, "dtype", None) == torch.bool for t in args[1] if t is not None):
            raise AssertionError("host sync in a solve: boolean-mask indexing")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", ["cem", "icem", "icem_best", "mppi", "mppi_all", "ps"])
def test_sampling_optimizers_never_sync(case):
    params = {"icem_best": dict(topk=4, return_mean=False), "mppi_all": dict(topk=None), "ps": {}}
    opt = make_optimizer(case.split("_")[0], num_samples=16, **params.get(case, dict(topk=4)))
    gen = torch.Generator().manual_seed(0)
    mean = torch.zeros(2, 5, 4)
    cost = quadratic(torch.full((2, 5, 4), 0.1))
    with NoHostSync():
        for fast in (False, True):
            state = opt.init(mean, torch.ones_like(mean))
            for _ in range(3):
                cand = opt.candidates(state, gen)
                state = opt.fast_update(state, cand, cost(cand), ops.TorchOps()) if fast else opt.update(
                    state, cand, cost(cand))[0]  # fmt: skip
            opt.result(state)


def test_the_no_sync_check_can_fail():
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():
        torch.ones(3).sum().item()
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():
        x = torch.ones(3)
        x[x > 0]
