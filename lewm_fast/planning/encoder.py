"""The planner's image encoder on the CPU: `model.encode_frames` (its specification: the ViT encoder's
CLS embedding, then the projector) with the encoder's matmuls on weights packed once for the op set.

Why: a plan encodes its history frames and goal once (predictive sampling: once per plan, against a
single rollout), and in eager PyTorch the ViT's matmuls run on unpacked weights, its GELU as a separate
pass. Here, per layer: one fused q/k/v matmul (the three projections' weights stacked), the MLP's GELU
as the matmul's epilogue where the op set has one (`CpuOps.linear_gelu`), and in the last layer only
the CLS row's query, output projection and MLP (the only row the embedding reads; keys and values still
come from every token). The same maths; only the summation order of the matmuls differs (tested
against `model.encode_frames`). The patch embedding, position table, LayerNorms, attention (PyTorch's
SDPA) and the projector are the model's own modules and functions.

Frames are split over the planner's worker threads (`cpu_parallel.run_chunks`, one intra-op thread each), and
a plan's goal and history frames go through the ViT together: at E = 1 that is one frame per core, where as
two batches of one frame each ran alone on both cores, meeting at a barrier after every op (slow with
OMP_WAIT_POLICY=PASSIVE or on a shared machine, as for the rollout: cpu_parallel.py). Every op before the
projector is per frame or per row and runs on one intra-op thread, so a frame's CLS row does not depend on the
split or the thread count; the projector, on one thread too, runs on the goal batch and the history batch apart,
as `encode_reference` calls the encoder: `embed` equals it bit for bit, on any number of threads (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lewm_fast import capability
from lewm_fast.planning import cpu_parallel


class _PackedLayer:
    """One pre-norm ViT layer's weights: LayerNorms as (weight, bias, eps), matmuls packed by `pack`."""

    def __init__(self, layer, pack, last: bool):
        att, mlp = layer.attention, layer.mlp
        self.heads = att.heads
        self.width = att.q_proj.weight.shape[0]
        self.norm1 = (layer.layernorm_before.weight, layer.layernorm_before.bias, layer.layernorm_before.eps)
        self.norm2 = (layer.layernorm_after.weight, layer.layernorm_after.bias, layer.layernorm_after.eps)
        self.last = last  # the last layer computes the CLS row alone: its query apart from keys and values
        if last:
            self.w_q, self.b_q = pack(att.q_proj.weight.detach()), att.q_proj.bias.detach()
            self.w_kv = pack(torch.cat([att.k_proj.weight, att.v_proj.weight]).detach())
            self.b_kv = torch.cat([att.k_proj.bias, att.v_proj.bias]).detach()
        else:
            self.w_qkv = pack(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach())
            self.b_qkv = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]).detach()
        self.w_o, self.b_o = pack(att.o_proj.weight.detach()), att.o_proj.bias.detach()
        self.w_1, self.b_1 = pack(mlp.fc1.weight.detach()), mlp.fc1.bias.detach()
        self.w_2, self.b_2 = pack(mlp.fc2.weight.detach()), mlp.fc2.bias.detach()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (N, L, width) -> (N, heads, L, dim_head)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, ops, x: torch.Tensor) -> torch.Tensor:
        """x (N, L, width) -> (N, L, width); in the last layer (N, 1, width): the CLS row alone."""
        h = F.layer_norm(x, (self.width,), *self.norm1)
        if self.last:
            q = ops.linear(h[:, :1], self.w_q, self.b_q)
            k, v = ops.linear(h, self.w_kv, self.b_kv).chunk(2, dim=-1)
            x = x[:, :1]
        else:
            q, k, v = ops.linear(h, self.w_qkv, self.b_qkv).chunk(3, dim=-1)
        att = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        x = x + ops.linear(att.transpose(1, 2).flatten(2), self.w_o, self.b_o)
        h = F.layer_norm(x, (self.width,), *self.norm2)
        return x + ops.linear(ops.linear_gelu(h, self.w_1, self.b_1), self.w_2, self.b_2)


class PackedEncoder:
    """`model.encode_frames` on an op set: frames (N, C, H, W) -> embeddings (N, D) fp32, inference only.

    `ops` supplies `pack_weight`, `linear` and `linear_gelu` (an fp32 `CpuOps`); the model's encoder must
    be fp32 (`supports(model)`)."""

    def __init__(self, model, ops):
        enc = model.encoder
        self.model, self.ops = model, ops
        depth = len(enc.layers)
        self.layers = [_PackedLayer(layer, ops.pack_weight, i == depth - 1) for i, layer in enumerate(enc.layers)]
        self.final_norm = enc.layernorm

    @staticmethod
    def supports(model) -> bool:
        return model.encoder.embeddings.cls_token.dtype == torch.float32

    @torch.no_grad()  # not inference mode: gradient planning differentiates a rollout from the embeddings
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self._project(self.cls_rows(frames))

    def _project(self, rows: torch.Tensor) -> torch.Tensor:
        with cpu_parallel.intra_op_threads(1):  # E rows: nothing to split, and the same bits on any machine
            return self.model.projector(rows)

    @torch.no_grad()
    def embed(self, pixels: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_reference(model, pixels, goal, self)` with the goal and history frames in one pass over the
        workers: pixels (b, H, C, h, w), goal (b, C, h, w) or (b, Tg, C, h, w) -> history (b, H, D), goal
        (b, D) (the last goal frame's)."""
        if goal.ndim == pixels.ndim - 1:
            goal = goal.unsqueeze(1)
        b, tg, h = goal.shape[0], goal.shape[1], pixels.shape[1]
        rows = self.cls_rows(torch.cat([goal.flatten(0, 1), pixels.flatten(0, 1)]))
        goal_emb = self._project(rows[: b * tg]).view(b, tg, -1)[:, -1]
        return self._project(rows[b * tg :]).view(b, h, -1), goal_emb

    @torch.no_grad()
    def cls_rows(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, C, H, W) -> (N, width): each frame's CLS row after the final LayerNorm, the frames in
        one contiguous chunk per worker thread (torch's intra-op thread count at the call; inline where the op
        set is not `thread_safe`)."""
        threads = torch.get_num_threads() if self.ops.thread_safe else 1
        out = torch.empty(frames.shape[0], self.final_norm.normalized_shape[0])

        def run(lo_hi: tuple[int, int]) -> None:
            lo, hi = lo_hi
            # one intra-op thread inline too (a worker has one): PyTorch's SDPA sums the CLS query's keys in
            # another order on more threads, so a frame's row would depend on the thread count and the split
            with torch.no_grad(), cpu_parallel.intra_op_threads(1):  # a worker thread's grad mode is its own
                x = self.model.encoder.embeddings(frames[lo:hi].to(torch.float32))
                for layer in self.layers:
                    x = layer.forward(self.ops, x)
                out[lo:hi] = self.final_norm(x[:, 0])

        cpu_parallel.run_chunks(run, capability.planner_chunks(frames.shape[0], threads, 0), threads)
        return out
