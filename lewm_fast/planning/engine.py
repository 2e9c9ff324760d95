"""The fast engines: backend "torch" (PyTorch ops; the CPU fast path) and "triton" (fused Triton kernels;
the GPU fast path). Both plan every environment x sample in one batch with the restructured rollout of
`rollout.py`, for any optimizer of `optimizers/`.

A sampling solve (all iterations) is a fixed sequence of device work, whatever the optimizer:
- candidates from the optimizer (`opt.candidates`: the public draws, from the planner's own
  `torch.Generator` on the device; graph-safe: the generator is registered with the CUDA graph, so every
  replay advances it exactly as an eager call would);
- cost = the rollout on the device; the optimizer's update through the op set (`opt.fast_update`: the
  fused Triton kernels of lewm_fast/kernels/ on CUDA); no host sync anywhere inside a solve.
Inputs and outputs live in static buffers per solve shape (E, H), kept in a small LRU cache
(`MAX_SOLVE_SHAPES`). On CUDA with `cuda_graph=True` the whole solve is captured once per shape (after a
warm-up on a side stream that compiles the Triton kernels) and replayed per call; `cuda_graph=False`
runs the same code eagerly. The distribution is kept in fp32 whatever the model dtype.

Gradient planning ("grad") differentiates the same restructured rollout in plain PyTorch ops (weights
packed without the CPU's oneDNN layout, K/V kept without in-place writes) with autograd, every
environment in one batch, eagerly (no graph: the optimizer steps are torch.optim's).

Determinism: the same seed gives the same plan on a given device and backend (the first call, which
captures, restores the generator state it consumed while warming up). For one environment in fp32 on
the CPU the draws are the reference's.
"""

from __future__ import annotations

import contextlib
import gc
from collections import OrderedDict

import torch

from lewm_fast import capability
from lewm_fast.planning import cpu_parallel
from lewm_fast.planning.cpu_ops import CpuOps
from lewm_fast.planning.encoder import PackedEncoder
from lewm_fast.planning.ops import TorchOps, TritonOps
from lewm_fast.planning.optimizers import solve_chunks
from lewm_fast.planning.plan_result import PlanResult
from lewm_fast.planning.reference import encode_reference
from lewm_fast.planning.rollout import PackedPredictor, rollout_cost
from lewm_fast.planning.settings import plan_settings

MAX_SOLVE_SHAPES = 4  # solve shapes (E, H) whose buffers (and CUDA graphs) a planner keeps


def nvtx_range(name: str, enabled: bool):
    """An NVTX range on CUDA (visible in Nsight Systems); a null context, free, elsewhere."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.cuda.nvtx.range(name)


def plan_threads(rows: int, threads: int | None = None) -> int:
    """CPU threads for a solve of `rows` = E x S candidates (`capability.planner_threads`);
    `threads` (LEWM_PLAN_THREADS) overrides."""
    if threads:
        return threads
    return capability.planner_threads(rows)


@contextlib.contextmanager
def _no_gc():
    """Python's cyclic garbage collector off for the duration of a solve: a solve creates thousands of
    short-lived tensor views, each allocation counting towards the next collection, and the collections
    find nothing (views are freed by reference counting) yet cost a CPU plan several per cent."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Solve:
    """Static buffers (and, on CUDA, the captured graph) of one solve shape.

    Inputs are copied into hist (E, H, D), goal (E, D), mean0 and std0 (E, horizon, A); the result is
    read from actions, std (E, horizon, A) and cost (E,). All fp32.
    """

    def __init__(self, engine: FastEngine, e: int, h: int):
        dev, f32, horizon = engine.device, torch.float32, engine.horizon
        d, a = engine.model.cfg.embed_dim, engine.model.cfg.action_block_dim
        self.engine = engine
        self.hist = torch.zeros(e, h, d, device=dev, dtype=f32)
        self.goal = torch.zeros(e, d, device=dev, dtype=f32)
        self.mean0 = torch.zeros(e, horizon, a, device=dev, dtype=f32)
        self.std0 = torch.ones(e, horizon, a, device=dev, dtype=f32)
        self.actions, self.std = torch.empty_like(self.mean0), torch.empty_like(self.std0)
        self.cost = torch.empty(e, device=dev, dtype=f32)
        self.has_std = True
        self.graph: torch.cuda.CUDAGraph | None = None

    def body(self, observe=None) -> None:
        """The whole solve: every iteration, from the static inputs to the static outputs. `observe(step,
        state, cand, cost, new_state)`, when given, sees every iteration (an eager solve only)."""
        eng = self.engine
        opt, gen, nvtx = eng.optimizer, eng.generator, eng.nvtx
        state = opt.init(self.mean0, self.std0)
        for step in range(opt.steps):
            with nvtx_range("sample", nvtx):
                cand = opt.candidates(state, gen)
            with nvtx_range("rollout", nvtx):
                cost = eng.rollout_cost(self.hist, self.goal, cand)
            with nvtx_range("update", nvtx):
                new_state = opt.fast_update(state, cand, cost, eng.ops)
            if observe is not None:
                observe(step, state, cand, cost, new_state)
            state = new_state
        actions, std, cost = opt.result(state)
        self.actions.copy_(actions)
        self.has_std = std is not None
        if std is not None:
            self.std.copy_(std)
        self.cost.copy_(cost)

    def capture(self) -> None:
        """Warm up on a side stream, then capture `body` into a CUDA graph (generator registered)."""
        gen = self.engine.generator
        state = gen.get_state()
        side = torch.cuda.Stream(self.engine.device)
        side.wait_stream(torch.cuda.current_stream(self.engine.device))
        with torch.cuda.stream(side):
            self.body()  # compiles the Triton kernels, creates cuBLAS/cuFFT workspaces
        torch.cuda.current_stream(self.engine.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(gen)
        with torch.cuda.graph(graph):
            self.body()
        gen.set_state(state)  # the warm-up's draws do not count: the first replay equals an eager run
        self.graph = graph

    def __call__(self, hist, goal, mean, std, use_graph: bool, observe=None) -> PlanResult:
        self.hist.copy_(hist)
        self.goal.copy_(goal)
        self.mean0.copy_(mean)
        self.std0.copy_(std)
        if use_graph and observe is None:
            if self.graph is None:
                self.capture()
            self.graph.replay()
        else:
            self.body(observe)
        return PlanResult(self.actions.clone(), self.std.clone() if self.has_std else None, self.cost.clone())


class FastEngine:
    """The batched engine on an op set (`make_ops`). Used through `lf.Planner(backend=...)`, which owns
    what it is given.

    Args:
        model: the `lf.LeWM` (in eval mode) it packs and rolls out.
        optimizer: an optimizer of the registry (`optimizers/`), its tensors on `device`.
        generator: the torch.Generator on `device` that every draw comes from.
        horizon: action blocks per plan. dtype: the rollout's dtype (fp32 or bf16). device: the model's.
        cuda_graph: capture each solve shape in a CUDA graph (on CUDA only).
    """

    distribution_dtype = torch.float32  # the optimizer's distribution and candidates

    def __init__(self, model, optimizer, generator: torch.Generator, *, horizon: int, dtype: torch.dtype,
                 device: torch.device, cuda_graph: bool = True):  # fmt: skip
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.horizon, self.dtype, self.device = horizon, dtype, torch.device(device)
        self.settings = plan_settings()
        self.ops = self.make_ops()
        self.packed = PackedPredictor(model, dtype, self.device, pack=self.ops.pack_weight)
        self.nvtx = self.device.type == "cuda"
        self.use_graph = bool(cuda_graph) and self.device.type == "cuda"
        # CPU: roll out in chunks of at most this many candidates over worker threads (LEWM_PLAN_CHUNK_ROWS,
        # 0 = one per thread; None = as many as suit the matmul: `capability.planner_chunk_rows`)
        self.chunk_rows = self.settings.chunk_rows if self.device.type == "cpu" else 0
        self._solves: OrderedDict[tuple[int, int], _Solve] = OrderedDict()
        self._grad_packed: PackedPredictor | None = None
        # CPU: the encoder's matmuls on packed fp32 weights too (encoder.py); elsewhere the model's encode
        self.encoder = None
        if self.device.type == "cpu" and PackedEncoder.supports(model):
            ops = self.ops if dtype == torch.float32 else CpuOps(torch.float32, compile=False)
            self.encoder = PackedEncoder(model, ops)

    def make_ops(self):
        """The op set: on the CPU, `CpuOps` (matmuls as `capability.planner_matmul` chooses; with
        LEWM_PLAN_COMPILE=1 compiled elementwise chains)."""
        if self.device.type == "cpu":
            return CpuOps(self.dtype, rows_hint=self.optimizer.num_samples, compile=self.settings.compile)
        return TorchOps()

    def rollout_cost(self, hist_emb, goal_emb, cand) -> torch.Tensor:
        """(E, S) costs; on the CPU in chunks of at most `chunk_rows` candidates over worker threads
        (cpu_parallel.py)."""
        if self.device.type == "cpu":
            return cpu_parallel.rollout_cost(self.packed, self.ops, hist_emb, goal_emb, cand, self.chunk_rows)
        return rollout_cost(self.packed, self.ops, hist_emb, goal_emb, cand)

    def _threads_for(self, rows: int) -> int | None:
        return plan_threads(rows, self.settings.threads) if self.device.type == "cpu" else None

    @torch.no_grad()  # not inference mode: gradient planning differentiates a rollout from these
    def embed(self, pixels: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (E, H, C, h, w), goal (E, C, h, w) -> history (E, H, D), goal (E, D) fp32 embeddings, as
        `encode_reference` encodes them (model dtype); on the CPU by the packed encoder, the same bits in one pass
        over the workers (`PackedEncoder.embed`)."""
        with nvtx_range("encode", self.nvtx):
            pixels, goal = pixels.to(self.device), goal.to(self.device)
            if self.encoder is not None:  # CPU: the packed encoder, its frames over the worker threads
                hist, goal_emb = self.encoder.embed(pixels, goal)
            else:
                hist, goal_emb = encode_reference(self.model, pixels, goal)
            return hist.float(), goal_emb.float()

    def cost(self, pixels: torch.Tensor, goal: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """cand (E, S, T, A) -> (E, S) fp32 costs of the packed model (any S and T >= H)."""
        return self.cost_embedded(*self.embed(pixels, goal), cand)

    @torch.inference_mode()
    def cost_embedded(self, hist_emb: torch.Tensor, goal_emb: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """`cost` from embeddings: hist_emb (E, H, D), goal_emb (E, D) fp32."""
        with cpu_parallel.intra_op_threads(self._threads_for(cand.shape[0] * cand.shape[1])), _no_gc():
            return self.rollout_cost(hist_emb, goal_emb, cand.float())

    def _solve_for(self, e: int, h: int) -> _Solve:
        """The static solve of shape (E, H), from a least-recently-used cache of MAX_SOLVE_SHAPES shapes."""
        key = (e, h)
        solve = self._solves.pop(key, None) or _Solve(self, e, h)
        self._solves[key] = solve
        while len(self._solves) > MAX_SOLVE_SHAPES:
            self._solves.popitem(last=False)
        return solve

    def plan(self, pixels, goal, mean, std) -> PlanResult:
        """pixels (E, H, C, h, w), goal (E, C, h, w), mean and std (E, horizon, A) -> PlanResult (fp32)."""
        return self.plan_embedded(*self.embed(pixels, goal), mean, std)

    def plan_embedded(self, hist_emb, goal_emb, mean, std, observe=None) -> PlanResult:
        """`plan` from embeddings: hist_emb (E, H, D), goal_emb (E, D) fp32 (e.g. a goal that is itself a
        predicted embedding, as benchmarks/plan_exactness.py uses). `observe(step, state, cand, cost,
        new_state)` sees every iteration of a sampling solve, run eagerly (planning/equivalence.py)."""
        if self.optimizer.kind == "gradient":
            return self._plan_gradient(hist_emb, goal_emb, mean, std)
        e, h = hist_emb.shape[:2]
        with (
            torch.inference_mode(),
            cpu_parallel.intra_op_threads(self._threads_for(e * self.optimizer.num_samples)),
            _no_gc(),
        ):
            return self._solve_for(e, h)(hist_emb, goal_emb, mean, std, self.use_graph, observe)

    def _plan_gradient(self, hist_emb, goal_emb, mean, std) -> PlanResult:
        """Gradient planning: the optimizer's public loop over one chunk of every environment, the cost
        differentiated through the restructured rollout (plain PyTorch ops, autograd)."""
        opt = self.optimizer
        if self._grad_packed is None:
            self._grad_packed = PackedPredictor(self.model, self.dtype, self.device)
        packed, ops = self._grad_packed, TorchOps()

        def cost_fn(cand):
            return rollout_cost(packed, ops, hist_emb, goal_emb, cand, differentiable=True)

        e = hist_emb.shape[0]
        with cpu_parallel.intra_op_threads(self._threads_for(e * opt.num_samples)):  # every environment in one chunk
            out = solve_chunks(opt, mean, std, lambda lo, hi: cost_fn, self.generator)
        return PlanResult(out.actions.float(), None, out.cost.float(), out.history, out.samples)


class TritonEngine(FastEngine):
    """The fast engine on the fused Triton kernels (GPU; on the CPU only under TRITON_INTERPRET=1)."""

    def make_ops(self):
        return TritonOps()
