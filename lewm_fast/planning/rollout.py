"""The fast rollout: the public LeWM cost (`reference.rollout_cost_reference`), restructured, same maths.

What changes against the public rollout, and why each is exact:
- Weights are packed once (`PackedPredictor`): LayerNorm affines are folded into the matmul that
  follows them, the attention scale into W_q, pred_proj's BatchNorm (eval mode: an affine map) into
  its first Linear, the action encoder's Conv1d(k=1) into its first Linear. All linear algebra.
- AdaLN modulation depends only on a frame's action embedding: every block's (shift, scale, gate) x 2
  for every frame of every candidate comes from one GEMM per iteration.
- While the window still grows (its start stays at frame 0), positions do not move, so with causal
  attention the earlier tokens' hidden states (and their per-layer K/V) are those of the previous
  step: only the newest token runs through the blocks. Once the window slides, every token has a new
  position and is recomputed; in the last block only the newest token's query, attention output and
  MLP are needed (the others contribute only their K/V).
- Only the newest token goes through the final norm and pred_proj (BatchNorm in eval mode is per token).
- The cost is reduced on the device in fp32.

All environments x samples run as one batch of N = E x S rows. The residual stream and all statistics
are fp32; matmuls run in the packed dtype (fp32 or bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _linear_of(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) in float64 of an nn.Linear, None for nn.Identity."""
    if isinstance(module, nn.Identity):
        return None
    w = _f64(module.weight)
    b = _f64(module.bias) if module.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    return w, b


def _fold_norm(norm: nn.LayerNorm, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear(w, b) after LayerNorm(gamma, beta) == Linear(w * gamma, w @ beta + b) after a plain LN."""
    gamma = _f64(norm.weight) if norm.weight is not None else torch.ones_like(w[0])
    beta = _f64(norm.bias) if norm.bias is not None else torch.zeros_like(w[0])
    return w * gamma, w @ beta + b


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm1d in eval mode as y = x * a + c."""
    a = _f64(bn.weight) / torch.sqrt(_f64(bn.running_var) + bn.eps)
    return a, _f64(bn.bias) - _f64(bn.running_mean) * a


@dataclass
class PackedBlock:
    """One AdaLN block's weights, folded. w_qkv (3I, D) with the attention norm's affine and the
    1/sqrt(dim_head) scale inside; w_o (D, I) or None; w_1 (F, D) with the MLP norm's affine; w_2 (D, F)."""

    w_qkv: torch.Tensor
    b_qkv: torch.Tensor
    w_o: torch.Tensor | None
    b_o: torch.Tensor | None
    w_1: torch.Tensor
    b_1: torch.Tensor
    w_2: torch.Tensor
    b_2: torch.Tensor
    eps1: float  # the block's non-affine norm1 (before attention)
    eps_attn: float  # the attention's own LayerNorm
    eps2: float  # the block's non-affine norm2 (before the MLP)
    eps_mlp: float  # the MLP's own LayerNorm
    # w_qkv split for op sets that skip queries nobody reads (`_attention_out`): w_q (I, D), w_kv (2I, D),
    # and w_ov (D, D) = w_o @ w_v, b_ov = w_o @ b_v + b_o: the attention output of a token that sees only itself.
    w_q: torch.Tensor | None = None
    b_q: torch.Tensor | None = None
    w_kv: torch.Tensor | None = None
    b_kv: torch.Tensor | None = None
    w_ov: torch.Tensor | None = None
    b_ov: torch.Tensor | None = None


class PackedPredictor:
    """The predictor, pred_proj and action encoder of an `lf.LeWM`, packed once for the fast rollout.

    Weights are folded in float64 and stored in `dtype` on `device`; LayerNorm epsilons and the
    position table (num_frames, D) stay fp32. `pack` (the op set's `pack_weight`) may turn each matmul
    weight into the layout its `linear` wants (e.g. oneDNN's blocked layout on the CPU).
    """

    def __init__(self, model, dtype: torch.dtype, device: torch.device | str, pack=None):
        if model.training:
            raise ValueError("model: expected eval mode (the planner folds BatchNorm running statistics)")
        cfg = model.cfg
        self.cfg, self.dtype, self.device = cfg, dtype, torch.device(device)
        self.num_frames, self.heads = cfg.num_frames, cfg.pred_heads
        out = _Packer(dtype, self.device, pack)
        self._pack_actions(model, out)
        self._pack_inputs(model, out)
        self.blocks = [_pack_block(block, cfg.pred_dim_head, out) for block in model.predictor.transformer.layers]
        self._pack_head(model, out)

    def _pack_actions(self, model, out: _Packer) -> None:
        """The action encoder (+ the transformer's cond_proj): c = W2 silu(W1 a + b1) + b2."""
        enc, cond = model.action_encoder, _linear_of(model.predictor.transformer.cond_proj)
        conv_w, conv_b = _f64(enc.patch_embed.weight)[:, :, 0], _f64(enc.patch_embed.bias)
        w1, b1 = _linear_of(enc.embed[0])
        w2, b2 = _linear_of(enc.embed[2])
        if cond is not None:
            w2, b2 = cond[0] @ w2, cond[0] @ b2 + cond[1]
        self.w_act1, self.b_act1 = out.mat(w1 @ conv_w), out.put(w1 @ conv_b + b1)
        self.w_act2, self.b_act2 = out.mat(w2), out.put(b2)

    def _pack_inputs(self, model, out: _Packer) -> None:
        """Every block's AdaLN modulation in one (depth * 6 * D, D) matrix; the position table (pre
        input_proj, fp32) and the optional input projection."""
        tr = model.predictor.transformer
        mods = [_linear_of(block.adaLN_modulation[1]) for block in tr.layers]
        self.w_mod, self.b_mod = out.mat(torch.cat([w for w, _ in mods])), out.put(torch.cat([b for _, b in mods]))
        self.pos = out.put(model.predictor.pos_embedding[0], torch.float32)
        inp = _linear_of(tr.input_proj)
        self.w_in, self.b_in = (out.mat(inp[0]), out.put(inp[1])) if inp is not None else (None, None)

    def _pack_head(self, model, out: _Packer) -> None:
        """Final norm -> output_proj -> pred_proj (Linear, BatchNorm, GELU, Linear): one Linear, GELU, Linear."""
        tr, head = model.predictor.transformer, model.pred_proj.net
        w_h, b_h = _linear_of(head[0])
        outp = _linear_of(tr.output_proj)
        if outp is not None:
            w_h, b_h = w_h @ outp[0], w_h @ outp[1] + b_h
        w_h, b_h = _fold_norm(tr.norm, w_h, b_h)
        a, c = _bn_affine(head[1])
        self.w_head1, self.b_head1 = out.mat(w_h * a[:, None]), out.put(b_h * a + c)
        self.w_head2, self.b_head2 = out.mat(_f64(head[3].weight)), out.put(_f64(head[3].bias))
        self.eps_final = tr.norm.eps


class _Packer:
    """Stores folded float64 weights for the fast rollout: `put` a tensor in the packed dtype (or `dt`) on the
    device, contiguous; `mat` a matmul weight (out, in), also in the op set's layout (`pack`)."""

    def __init__(self, dtype: torch.dtype, device: torch.device, pack=None):
        self.dtype, self.device, self.pack = dtype, device, pack

    def put(self, t: torch.Tensor | None, dt: torch.dtype | None = None) -> torch.Tensor | None:
        return None if t is None else t.detach().to(self.device, dt or self.dtype).contiguous()

    def mat(self, t: torch.Tensor | None):
        t = self.put(t)
        return t if t is None or self.pack is None else self.pack(t)


def _pack_block(block, dim_head: int, out: _Packer) -> PackedBlock:
    """One AdaLN block folded: the attention norm's affine and 1/sqrt(dim_head) into w_qkv, the MLP norm's
    affine into w_1, and the split weights of `PackedBlock` for op sets that skip unread queries."""
    attn, mlp = block.attn, block.mlp.net
    w_qkv, b_qkv = _fold_norm(attn.norm, _f64(attn.to_qkv.weight), torch.zeros(attn.to_qkv.weight.shape[0],
                              dtype=torch.float64, device=attn.to_qkv.weight.device))  # fmt: skip
    inner = w_qkv.shape[0] // 3
    w_qkv[:inner] *= dim_head**-0.5  # SDPA's default scale, folded into q
    b_qkv[:inner] *= dim_head**-0.5
    o = _linear_of(attn.to_out[0]) if isinstance(attn.to_out, nn.Sequential) else None
    w_fc1, b_fc1 = _fold_norm(mlp[0], *_linear_of(mlp[1]))
    w_fc2, b_fc2 = _linear_of(mlp[4])
    w_v, b_v = w_qkv[2 * inner :], b_qkv[2 * inner :]
    w_ov, b_ov = (o[0] @ w_v, o[0] @ b_v + o[1]) if o else (w_v, b_v)
    mat, put = out.mat, out.put
    return PackedBlock(
        mat(w_qkv), put(b_qkv), mat(o[0]) if o else None, put(o[1]) if o else None,
        mat(w_fc1), put(b_fc1), mat(w_fc2), put(b_fc2),
        block.norm1.eps, attn.norm.eps, block.norm2.eps, mlp[0].eps,
        mat(w_qkv[:inner]), put(b_qkv[:inner]), mat(w_qkv[inner:]), put(b_qkv[inner:]), mat(w_ov), put(b_ov),
    )  # fmt: skip


def action_conditions(packed: PackedPredictor, ops, cand: torch.Tensor) -> torch.Tensor:
    """Every block's AdaLN modulation for every frame of every candidate.

    cand (E, S, T, A) -> (N = E*S, T, depth, 6, D) in the packed dtype: [..., l, 0:6] are block l's
    shift1, scale1, gate1, shift2, scale2, gate2 (the public chunk order). A view of the op set's
    `linear_planes`: on the CPU one contiguous (N, D) plane per (block, chunk, frame), so that a norm chain
    reads the (shift, scale) of consecutive rows from consecutive memory, not one 4 KB page per row
    (docs/cpu-planner.md); rows are ordered frame by frame for that.
    """
    e, s, t, a = cand.shape
    n, depth, d = e * s, len(packed.blocks), packed.cfg.pred_hidden_dim
    x = cand.reshape(n, t, a).transpose(0, 1).reshape(t * n, a).to(packed.dtype)
    c = ops.linear(nn.functional.silu(ops.linear(x, packed.w_act1, packed.b_act1)), packed.w_act2, packed.b_act2)
    planes = ops.linear_planes(nn.functional.silu(c), packed.w_mod, packed.b_mod, d)  # (depth * 6, t * n, d)
    return planes.view(depth, 6, t, n, d).permute(3, 2, 0, 1, 4)


class WindowKV:
    """Each layer's K/V by window position, kept from one step to the next while the window grows.

    The planner keeps them in static buffers (N, window, 2I) per layer (a position's K then V, as the K/V
    matmul writes a token's row), in place; with `differentiable=True` (gradient planning) each step makes new
    tensors instead, so that autograd keeps what the backward needs.
    """

    def __init__(self, layers: int, rows: int, window: int, inner: int, device, dtype, differentiable: bool = False):
        self.differentiable, self.inner = differentiable, inner
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * layers
        self.bufs = (
            None
            if differentiable
            else [torch.empty(rows, window, 2 * inner, device=device, dtype=dtype) for _ in range(layers)]
        )

    def window(self, layer: int, k: torch.Tensor, v: torch.Tensor, first: int, grows: bool):
        """K/V of the whole window: this step's new tokens k, v (N, n, I) at window positions first.., after
        the earlier tokens' cached ones when the window grows; otherwise k, v themselves (kept for the next step)."""
        if self.differentiable:
            if grows:
                k0, v0 = self.kv[layer]
                k, v = torch.cat([k0[:, :first], k], 1), torch.cat([v0[:, :first], v], 1)
            self.kv[layer] = (k, v)
            return k, v
        start = first if grows else 0
        slot = self.bufs[layer][:, start : start + k.shape[1]]
        slot[..., : self.inner] = k
        slot[..., self.inner :] = v
        return self._views(layer, start + k.shape[1]) if grows else (k, v)

    def project(self, layer: int, ops, y: torch.Tensor, w_kv, b_kv, first: int, grows: bool):
        """`window` of the new tokens' K/V, y (N, n, D) @ w_kv.T + b_kv at window positions first..: in the
        static buffers written by the matmul itself (no copy where the op set's `linear_into` writes strided
        rows), returning views of the window's K and V (N, first + n, I)."""
        if self.differentiable:
            k, v = ops.linear(y, w_kv, b_kv).chunk(2, dim=-1)
            return self.window(layer, k, v, first, grows)
        ops.linear_into(y, w_kv, b_kv, self.bufs[layer][:, first : first + y.shape[1]])
        return self._views(layer, first + y.shape[1])

    def _views(self, layer: int, length: int):
        kv = self.bufs[layer][:, :length]
        return kv[..., : self.inner], kv[..., self.inner :]


def _attention_out(
    packed: PackedPredictor,
    ops,
    blk: PackedBlock,
    y,
    kv: WindowKV | None,
    layer: int,
    first: int,
    grows: bool,
    last: bool,
):
    """The attention sub-layer's output (W_o attention + b_o, before the gate) of the new tokens whose
    output is read: all n of them, or only the newest in the last block. No query is computed that
    nobody reads: a token at window position 0 (`first == 0`) sees only itself, so its output is
    W_o v + b_o = W_ov y + b_ov; in the last block the other tokens give only their K/V. Saves ~7% of a
    rollout's matmul work (the query and output projections of those tokens) for two more small matmuls.

    y (N, n, D) the new tokens' attention input; kv the window's K/V (`WindowKV`), layer its index.
    Returns (N, n, D), or (N, 1, D) in the last block, in the packed dtype.
    """
    if kv is not None:  # the K/V the next steps read again: into the cache
        k, v = kv.project(layer, ops, y, blk.w_kv, blk.b_kv, first, grows)
    else:
        k, v = ops.linear(y, blk.w_kv, blk.b_kv).chunk(2, dim=-1)  # strided views, no copies
    n = y.shape[1]
    outs = []
    if first == 0 and (not last or n == 1):  # the token at window position 0 sees only itself
        outs.append(ops.linear(y[:, :1].contiguous(), blk.w_ov, blk.b_ov))
    asking = y[:, -1:] if last else y[:, 1:] if first == 0 else y  # the tokens whose query is read
    if asking.shape[1] > 0 and not (last and n == 1 and first == 0):
        q = ops.linear(asking.contiguous(), blk.w_q, blk.b_q)
        o = ops.window_attention(q, k, v, packed.heads)  # the queries are the window's last positions
        outs.append(ops.linear(o, blk.w_o, blk.b_o) if blk.w_o is not None else o)
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def _blocks(packed: PackedPredictor, ops, x, mods, kv: WindowKV | None, first: int, grows: bool) -> torch.Tensor:
    """Every AdaLN block for the n newest tokens of the window, then the final norm of the last one.

    x (N, n, D) fp32 residual of the new tokens (inputs + positions); mods (N, n, depth, 6, D) their
    modulation; kv: the K/V kept between steps (None: keep nothing).
    In the last block only the last token's output is computed (every token still gives its K/V).
    Each sub-layer's output joins the residual stream fused with the norm that follows it
    (`ops.linear_join_norm`): the next sub-layer's input, or the final norm after the last block.
    Returns the final-normed last token (N, D) in the packed dtype.
    """
    if (y := ops.blocks_step(packed, x, mods, kv, first)) is not None:  # the whole loop below in one call
        return y
    depth, dtype = len(packed.blocks), packed.dtype
    # Per block: (shift1, scale1, gate1, shift2, scale2, gate2), each (N, n, D), as views in two ops per
    # block (indexing them one by one costs a few Python-level ops each, and a step runs 6 x depth).
    mod = [m.unbind(2) for m in mods.unbind(2)]
    blk = packed.blocks[0]
    y = ops.norm_modulate(x, mod[0][0], mod[0][1], blk.eps1, blk.eps_attn, dtype)
    for i, blk in enumerate(packed.blocks):
        _, _, gate1, shift2, scale2, gate2 = mod[i]
        last = i == depth - 1 and x.shape[1] > 1
        if getattr(ops, "skip_unread_queries", False):
            delta = _attention_out(packed, ops, blk, y, kv, i, first, grows, i == depth - 1)
            if last:
                x, gate1, shift2, scale2, gate2 = (u[:, -1:] for u in (x, gate1, shift2, scale2, gate2))
            x, y = ops.linear_join_norm(delta, None, None, gate1, x, shift2, scale2, blk.eps2, blk.eps_mlp, dtype)
        else:
            q, k, v = ops.linear(y, blk.w_qkv, blk.b_qkv).chunk(3, dim=-1)  # strided views, no copies
            if kv is not None:
                k, v = kv.window(i, k, v, first, grows)
            if last:
                q, x, gate1, shift2, scale2, gate2 = (u[:, -1:] for u in (q, x, gate1, shift2, scale2, gate2))
            o = ops.window_attention(q, k, v, packed.heads)
            x, y = ops.linear_join_norm(o, blk.w_o, blk.b_o, gate1, x, shift2, scale2, blk.eps2, blk.eps_mlp, dtype)
        hidden = ops.linear_gelu(y, blk.w_1, blk.b_1)
        if i + 1 < depth:
            nxt = packed.blocks[i + 1]
            shift1, scale1 = mod[i + 1][0], mod[i + 1][1]
            x, y = ops.linear_join_norm(
                hidden, blk.w_2, blk.b_2, gate2, x, shift1, scale1, nxt.eps1, nxt.eps_attn, dtype
            )
        else:  # the final norm (its affine is folded into pred_proj)
            x, y = ops.linear_join_norm(hidden, blk.w_2, blk.b_2, gate2, x, None, None, packed.eps_final, 0.0, dtype)
    return y[:, -1]


def rollout_cost(
    packed: PackedPredictor,
    ops,
    hist_emb: torch.Tensor,
    goal_emb: torch.Tensor,
    cand: torch.Tensor,
    differentiable: bool = False,
) -> torch.Tensor:
    """The public cost of every candidate (docs/cpu-planner.md), restructured.

    Args:
        packed: the packed model. ops: `TorchOps`, `CpuOps` or `TritonOps` (see ops.py).
        hist_emb: (E, H, D) fp32 history embeddings. goal_emb: (E, D) fp32.
        cand: (E, S, T, A) candidate action blocks, T >= H.
        differentiable: keep every tensor autograd needs (gradient planning: plain `TorchOps` and
            weights packed without `pack`); the planner's in-place K/V buffers otherwise.
    Returns:
        (E, S) fp32 costs: sum over D of (last prediction - goal)^2.
    """
    last = rollout_last(packed, ops, hist_emb, cand, differentiable)
    return (last - goal_emb.float().unsqueeze(1)).square().sum(-1)


def rollout_last(
    packed: PackedPredictor, ops, hist_emb: torch.Tensor, cand: torch.Tensor, differentiable: bool = False
) -> torch.Tensor:
    """The last predicted embedding of every candidate's rollout: (E, H, D), (E, S, T, A) -> (E, S, D) fp32."""
    e, s, horizon, _ = cand.shape
    h, d = hist_emb.shape[1], hist_emb.shape[2]
    n_rows, window = e * s, packed.num_frames
    mods = action_conditions(packed, ops, cand)  # (N, T, depth, 6, D)
    # Every frame embedding of the rollout: H history frames, then one prediction per step.
    frames = torch.empty(n_rows, horizon + 1, d, device=cand.device, dtype=torch.float32)
    frames[:, :h] = hist_emb.float().unsqueeze(1).expand(e, s, h, d).reshape(n_rows, h, d)
    steps = horizon - h + 1
    # K/V by window position, per layer, for the steps whose window grows (their earlier tokens are unchanged).
    will_grow = any(0 < t and h + t <= window for t in range(steps))
    inner = packed.heads * packed.cfg.pred_dim_head
    kv = (
        WindowKV(len(packed.blocks), n_rows, window, inner, cand.device, packed.dtype, differentiable)
        if will_grow
        else None
    )
    for t in range(steps):
        length, lo = min(window, h + t), max(0, h + t - window)
        grows = t > 0 and lo == 0  # same positions as the last step: reuse every layer's K/V
        first = h + t - 1 if grows else lo  # first new frame
        x = frames[:, first : h + t] + packed.pos[first - lo : length]
        if packed.w_in is not None:
            x = ops.linear(x.to(packed.dtype), packed.w_in, packed.b_in).float()
        z = _blocks(packed, ops, x, mods[:, first : h + t], kv if lo == 0 else None, first - lo, grows)
        hid = ops.linear_gelu(z, packed.w_head1, packed.b_head1)
        frames[:, h + t] = ops.linear(hid, packed.w_head2, packed.b_head2).float()
    return frames[:, horizon].view(e, s, d)
