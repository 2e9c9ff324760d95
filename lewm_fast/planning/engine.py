"""The fast CEM engines: backend "torch" (PyTorch ops; the CPU fast path) and "triton" (fused Triton
kernels; the GPU fast path). Both plan every environment x sample in one batch with the restructured
rollout of `rollout.py`.

One solve (all iterations) is a fixed sequence of device work on static buffers, allocated once per
solve shape (E, H) for the planner's (S, horizon, iters, dtype):
- noise from the planner's own `torch.Generator` on the device (`planner.generator`; graph-safe: it is
  registered with the CUDA graph, so every replay advances it exactly as an eager call would);
- candidates = noise * std + mean with the mean as sample 0; cost = rollout on the device;
- elite update (top-k, mean, unbiased std) on the device; no host sync anywhere inside a solve.
On CUDA with `cuda_graph=True` the whole solve is captured once per shape (after a warm-up on a side
stream that compiles the Triton kernels) and replayed per call; `cuda_graph=False` runs the same code
eagerly. The CEM distribution is kept in fp32 whatever the model dtype.

Determinism: the same seed gives the same plan on a given device and backend (the first call, which
captures, restores the generator state it consumed while warming up). The noise stream is not the
reference's (which draws one environment at a time on the host side's order).
"""

from __future__ import annotations

import contextlib
import gc
import os

import torch

from lewm_fast import capability
from lewm_fast.planning import cpu_parallel
from lewm_fast.planning.cpu_ops import CpuOps
from lewm_fast.planning.ops import TorchOps, TritonOps
from lewm_fast.planning.planner import _ENGINES, PlanResult
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost


def nvtx_range(name: str, enabled: bool):
    """An NVTX range on CUDA (visible in Nsight Systems); a null context, free, elsewhere."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.cuda.nvtx.range(name)


def plan_threads(rows: int) -> int:
    """CPU threads for a solve of `rows` = E x S candidates (`capability.planner_threads`).
    LEWM_PLAN_THREADS overrides."""
    env = os.environ.get("LEWM_PLAN_THREADS")
    if env:
        return max(1, int(env))
    return capability.planner_threads(rows)


@contextlib.contextmanager
def _no_gc():
    """Python's cyclic garbage collector off for the duration of a solve: a solve creates thousands of
    short-lived tensor views, each allocation counting towards the next collection, and the collections
    (which find nothing: views are freed by reference counting) took ~5-9% of a CPU plan."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def _threads(n: int | None):
    """Run with n CPU threads (None: leave torch's setting alone, e.g. on a GPU)."""
    old = torch.get_num_threads()
    n = old if n is None else n
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


class _Solve:
    """Static buffers (and, on CUDA, the captured graph) of one solve shape.

    Inputs are copied into hist (E, H, D), goal (E, D), mean0 and std0 (E, horizon, A); the result is
    read from mean, std (E, horizon, A) and elite_cost (E,). All fp32.
    """

    def __init__(self, engine: FastEngine, e: int, h: int):
        p, dev, f32 = engine.p, engine.device, torch.float32
        d, a = p.model.cfg.embed_dim, p.action_block_dim
        self.engine = engine
        self.hist = torch.zeros(e, h, d, device=dev, dtype=f32)
        self.goal = torch.zeros(e, d, device=dev, dtype=f32)
        self.mean0 = torch.zeros(e, p.horizon, a, device=dev, dtype=f32)
        self.std0 = torch.ones(e, p.horizon, a, device=dev, dtype=f32)
        self.noise = torch.empty(e, p.num_samples, p.horizon, a, device=dev, dtype=f32)
        self.cand = torch.empty_like(self.noise)
        self.mean, self.std = torch.empty_like(self.mean0), torch.empty_like(self.std0)
        self.elite_cost = torch.empty(e, device=dev, dtype=f32)
        self.graph: torch.cuda.CUDAGraph | None = None

    def body(self) -> None:
        """The whole solve: every iteration, from the static inputs to the static outputs."""
        eng = self.engine
        p, ops, nvtx = eng.p, eng.ops, eng.nvtx
        mean, std = self.mean0, self.std0
        elite_cost = self.elite_cost
        for _ in range(p.iters):
            with nvtx_range("sample", nvtx):
                torch.randn(self.noise.shape, generator=p.generator, device=eng.device, out=self.noise)
                torch.addcmul(mean.unsqueeze(1), self.noise, std.unsqueeze(1), out=self.cand)
                self.cand[:, 0] = mean
            with nvtx_range("rollout", nvtx):
                cost = eng.rollout_cost(self.hist, self.goal, self.cand)
            with nvtx_range("elite update", nvtx):
                mean, std, elite_cost = ops.elite_update(cost, self.cand, p.topk)
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.elite_cost.copy_(elite_cost)

    def capture(self) -> None:
        """Warm up on a side stream, then capture `body` into a CUDA graph (generator registered)."""
        gen = self.engine.p.generator
        state = gen.get_state()
        side = torch.cuda.Stream(self.engine.device)
        side.wait_stream(torch.cuda.current_stream(self.engine.device))
        with torch.cuda.stream(side):
            self.body()  # compiles the Triton kernels, creates cuBLAS workspaces
        torch.cuda.current_stream(self.engine.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(gen)
        with torch.cuda.graph(graph):
            self.body()
        gen.set_state(state)  # the warm-up's draws do not count: the first replay equals an eager run
        self.graph = graph

    def __call__(self, hist, goal, mean, std, use_graph: bool) -> PlanResult:
        self.hist.copy_(hist)
        self.goal.copy_(goal)
        self.mean0.copy_(mean)
        self.std0.copy_(std)
        if use_graph:
            if self.graph is None:
                self.capture()
            self.graph.replay()
        else:
            self.body()
        return PlanResult(self.mean.clone(), self.std.clone(), self.elite_cost.clone())


class FastEngine:
    """The batched CEM engine on an op set (`make_ops`). Used through `lf.CEMPlanner(backend=...)`."""

    cem_dtype = torch.float32  # the CEM distribution and candidates

    def __init__(self, planner):
        self.p = planner
        self.device = planner.device
        self.ops = self.make_ops()
        self.packed = PackedPredictor(planner.model, planner.dtype, planner.device, pack=self.ops.pack_weight)
        self.nvtx = self.device.type == "cuda"
        self.use_graph = bool(planner.cuda_graph) and self.device.type == "cuda"
        # CPU: roll out in chunks of at most this many candidates (LEWM_PLAN_CHUNK_ROWS, 0 = no limit)
        self.chunk_rows = (
            int(os.environ.get("LEWM_PLAN_CHUNK_ROWS", capability.MAX_CHUNK_ROWS)) if self.device.type == "cpu" else 0
        )
        self._solves: dict[tuple[int, int], _Solve] = {}

    def make_ops(self):
        """The op set: on the CPU, oneDNN matmuls and (LEWM_PLAN_COMPILE=1) compiled elementwise chains."""
        if self.device.type == "cpu":
            compile_ops = os.environ.get("LEWM_PLAN_COMPILE", "0") == "1"
            return CpuOps(self.p.dtype, rows_hint=self.p.num_samples, compile=compile_ops)
        return TorchOps()

    def rollout_cost(self, hist_emb, goal_emb, cand) -> torch.Tensor:
        """(E, S) costs; on the CPU in chunks of at most `chunk_rows` candidates over worker threads
        (cpu_parallel.py)."""
        if self.device.type == "cpu":
            return cpu_parallel.rollout_cost(self.packed, self.ops, hist_emb, goal_emb, cand, self.chunk_rows)
        return rollout_cost(self.packed, self.ops, hist_emb, goal_emb, cand)

    def _threads_for(self, rows: int) -> int | None:
        return plan_threads(rows) if self.device.type == "cpu" else None

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (E, H, C, h, w), goal (E, C, h, w) -> history (E, H, D), goal (E, D) fp32 embeddings.

        Encoding runs once per plan in the model's own dtype (fidelity over speed: it is ~1/30 of a plan).
        """
        with nvtx_range("encode", self.nvtx):
            e, h = pixels.shape[:2]
            frames = torch.cat([pixels.flatten(0, 1), goal]).to(self.device)
            emb = self.p.model.encode_frames(frames).float()
            return emb[: e * h].view(e, h, -1), emb[e * h :]

    @torch.inference_mode()
    def cost(self, hist_emb: torch.Tensor, goal_emb: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """cand (E, S, T, A) -> (E, S) fp32 costs of the packed model (any S and T >= H)."""
        with _threads(self._threads_for(cand.shape[0] * cand.shape[1])), _no_gc():
            return self.rollout_cost(hist_emb, goal_emb, cand.float())

    @torch.inference_mode()
    def plan(self, hist_emb, goal_emb, mean, std) -> PlanResult:
        """hist_emb (E, H, D), goal_emb (E, D), mean and std (E, horizon, A) -> PlanResult (fp32)."""
        e, h = hist_emb.shape[:2]
        solve = self._solves.get((e, h))
        if solve is None:
            solve = self._solves[(e, h)] = _Solve(self, e, h)
        with _threads(self._threads_for(e * self.p.num_samples)), _no_gc():
            return solve(hist_emb, goal_emb, mean, std, self.use_graph)


class TritonEngine(FastEngine):
    """The fast engine on the fused Triton kernels (GPU; on the CPU only under TRITON_INTERPRET=1)."""

    def make_ops(self):
        return TritonOps()

    def __init__(self, planner):
        if planner.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend: 'triton' needs a CUDA device (or TRITON_INTERPRET=1 for tests), got a model on "
                f"{planner.device}; use backend='torch' or 'auto'"
            )
        super().__init__(planner)


_ENGINES["torch"] = FastEngine
try:
    import triton  # noqa: F401

    _ENGINES["triton"] = TritonEngine
except ImportError:  # pragma: no cover - no Triton: "auto" uses "torch" on CUDA too
    pass
