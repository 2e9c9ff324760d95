"""A real `swm.World` planning loop (TwoRoom, `WorldModelPolicy`) with each accelerated solver on a tiny model
(peer: needs stable_worldmodel): the reference drop-in takes the public solver's actions step for step, the
fast one runs every environment in one batch. Also `to_swm`, which builds the public model for these."""

import numpy as np
import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf

pytest.importorskip("stable_worldmodel", reason="needs stable_worldmodel")
pytest.importorskip("transformers", reason="needs transformers")
pytestmark = pytest.mark.peer

SETTINGS = {
    "CEMSolver": dict(num_samples=24, n_steps=3, topk=4),
    "ICEMSolver": dict(num_samples=24, n_steps=3, topk=4),
    "MPPISolver": dict(num_samples=24, n_steps=3, topk=4),
    "PredictiveSamplingSolver": dict(num_samples=24),
    "GradientSolver": dict(n_steps=3, num_samples=2, optimizer_kwargs={"lr": 0.1}),
}


@pytest.fixture(scope="module")
def public_model():
    return lf.interop.to_swm(tiny_model(seed=8)).eval()


def test_to_swm_is_the_inverse_of_from_swm():
    ours = tiny_model(seed=9)
    public = lf.interop.to_swm(ours)
    back = lf.interop.from_swm(public)
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    pixels = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        expected = public.encode({"pixels": pixels.clone()})["emb"]
        torch.testing.assert_close(ours.encode(pixels), expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="model: expected an lf.LeWM"):
        lf.interop.to_swm(public)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_world_loop_public_reference_and_fast(public_model, name):
    import stable_worldmodel.solver as public_solvers

    from lewm_fast.interop.world import run_world

    original = getattr(public_solvers, name)
    handle = lf.interop.accelerate()
    try:
        accelerated = getattr(public_solvers, name)
        kw = dict(batch_size=1, seed=3, **SETTINGS[name])
        runs = {
            label: run_world(cls(public_model, **kw, **extra), 28, num_envs=2, max_steps=12, seed=1)
            for label, cls, extra in (
                ("public", original, {}),
                ("reference", accelerated, {"backend": "reference"}),
                ("fast", accelerated, {"backend": "auto"}),
            )  # fmt: skip
        }
    finally:
        handle.undo()
    assert accelerated is getattr(lf.interop, name)
    public, reference, fast = runs["public"], runs["reference"], runs["fast"]
    assert public.actions.shape == (12, 2, 2) and np.isfinite(public.actions).all()
    np.testing.assert_array_equal(reference.actions, public.actions)
    assert reference.success == public.success
    assert fast.actions.shape == public.actions.shape and np.isfinite(fast.actions).all()
    assert fast.envs_planned == [2] * len(fast.solve_s)  # the public loop's batches, planned in one call


def test_target_as_goal_puts_the_goal_frame_in_info():
    import stable_worldmodel as swm

    from lewm_fast.interop.world import TargetAsGoal, pixel_transforms

    world = swm.World("swm/TwoRoom-v1", num_envs=2, image_shape=(28, 28), max_episode_steps=5,
                      pre_wrappers=[TargetAsGoal])  # fmt: skip
    try:
        world.reset(seed=0)
        goal = world.infos["goal"]
    finally:
        world.close()
    assert goal.shape == world.infos["pixels"].shape == (2, 1, 28, 28, 3) and goal.dtype == np.uint8
    frame = pixel_transforms(28)["goal"](torch.as_tensor(goal[0, 0]).permute(2, 0, 1))
    assert frame.shape == (3, 28, 28) and frame.dtype == torch.float32
    assert torch.isfinite(frame).all()
