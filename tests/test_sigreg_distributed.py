"""SIGReg over 2 processes (gloo, CPU) equals SIGReg of one process over the concatenated batch, in value
and in gradient under the documented convention (lewm_fast/sigreg.py): each rank's dproj is W times its
slice of the one-process gradient, so that DDP's averaging gives the one-process parameter gradient.
Checked for the reference backend and the cpp backend, with rank-dependent seeds (the directions must be
rank 0's), unequal batch sizes per rank, and a real DistributedDataParallel module."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import rel_err

import lewm_fast as lf
from lewm_fast.sigreg import knot_tables
from lewm_fast.training.distributed import teardown

WORLD = 2
T, D, M = 3, 12, 48
BATCH = (5, 3)  # per rank: unequal on purpose (the global N is all-reduced)


def global_batch() -> torch.Tensor:
    return torch.randn(T, sum(BATCH), D, generator=torch.Generator().manual_seed(11))


def local_slice(rank: int) -> slice:
    start = sum(BATCH[:rank])
    return slice(start, start + BATCH[rank])


def one_process(x: torch.Tensor, seed: int):
    """Value and gradient of the reference on the whole batch, directions from `seed` (rank 0's)."""
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    value = lf.SIGReg(num_proj=M, backend="reference", distributed=False)(x)
    value.backward()
    return value.detach(), x.grad


def _worker(rank: int, init_file: str, backends: list[str]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        for backend in backends:
            _check_backend(rank, backend)
    finally:
        # The library's teardown: the DDP modules of _check_backend collected before the group is left (one
        # destroyed at the interpreter's exit can make a rank abort).
        teardown()


def _check_backend(rank: int, backend: str) -> None:
    x_all = global_batch()
    v_one, g_one = one_process(x_all, seed=100)
    part = local_slice(rank)
    # Module: every rank draws (rank-dependent seed, so only a broadcast makes them agree).
    x = x_all[:, part].clone().requires_grad_(True)
    torch.manual_seed(100 + rank)
    value = lf.SIGReg(num_proj=M, backend=backend)(x)
    value.backward()
    assert rel_err(value.detach(), v_one) <= 1e-6, (backend, value.item(), v_one.item())
    assert rel_err(x.grad, WORLD * g_one[:, part]) <= 1e-5, backend
    # The global RNG advanced as in one process: the next draw agrees with rank 0's next draw.
    nxt = torch.randn(4)
    mine = nxt.clone()
    dist.broadcast(nxt, src=0)
    if rank == 0:
        assert torch.equal(mine, nxt)

    # DDP: parameter gradients averaged over ranks equal the one-process gradient.
    torch.manual_seed(0)
    lin = torch.nn.Linear(D, D)
    inputs = global_batch()
    ref_lin = torch.nn.Linear(D, D)
    ref_lin.load_state_dict(lin.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(lin)
    a = lf.draw_directions(D, M, generator=torch.Generator().manual_seed(5))
    lf.sigreg(ddp(inputs[:, part]), a, backend=backend).backward()
    lf.sigreg(ref_lin(inputs), a, backend="reference", distributed=False).backward()
    assert rel_err(lin.weight.grad, ref_lin.weight.grad) <= 1e-5, backend
    assert rel_err(lin.bias.grad, ref_lin.bias.grad) <= 1e-5, backend

    # distributed=False on one rank is that rank's own statistic (no collective is entered).
    x_local = x_all[:, part]
    local = lf.sigreg(x_local, a, backend=backend, distributed=False)
    alone = lf.sigreg_reference(x_local, a, *knot_tables(17, 3.0))
    assert rel_err(local, alone) <= 1e-5


def test_two_processes_equal_one(tmp_path):
    from lewm_fast import _ext

    backends = ["reference"] + (["cpp"] if _ext.load() is not None else [])
    init_file = str(tmp_path / "rendezvous")
    mp.spawn(_worker, args=(init_file, backends), nprocs=WORLD, join=True)
    if "cpp" not in backends:
        pytest.skip("C++ extension unavailable: only the reference backend was checked")
