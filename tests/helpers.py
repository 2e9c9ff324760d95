"""Small models and tolerance rules shared by the tests."""

import torch

import lewm_fast as lf


def tiny_config(**changes) -> lf.LeWMConfig:
    """A LeWM small enough for CPU tests (image 28, D 32, 2 encoder and 2 predictor layers)."""
    base = dict(
        image_size=28, patch_size=7, enc_dim=48, enc_depth=2, enc_heads=3, enc_mlp_dim=96,
        embed_dim=32, proj_hidden_dim=64, pred_depth=2, pred_heads=2, pred_dim_head=16,
        pred_mlp_dim=64, pred_hidden_dim=32, pred_output_dim=32, pred_proj_hidden_dim=64, dropout=0.0,
    )  # fmt: skip
    base.update(changes)
    return lf.LeWMConfig(**base)


def tiny_model(seed: int = 0, **changes) -> lf.LeWM:
    """A tiny LeWM in eval mode whose every parameter matters (AdaLN is not left at zero)."""
    torch.manual_seed(seed)
    model = lf.LeWM(tiny_config(**changes))
    randomize(model)
    return model.eval()


@torch.no_grad()
def randomize(model: torch.nn.Module) -> None:
    """Give AdaLN modulation and BatchNorm statistics non-trivial values (they start at 0 / 1)."""
    for name, p in model.named_parameters():
        if "adaLN_modulation" in name:
            p.normal_(0, 0.05)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (a relative error that does not blow up at b ~ 0)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def assert_rollout_within_bound(model, hist, goal, cand, got, dtype=torch.float32) -> None:
    """Costs `got` of cand (E, S, T, A) rolled out from hist (E, H, D), goal (E, D) by a fast path in
    `dtype`: within the derived bound of the exact (float64) reference costs (planning/equivalence.py)."""
    from lewm_fast.planning import equivalence as eq

    ref = eq.ReferenceCosts(model, dtype)
    ref.use_embeddings(hist, goal)
    check = eq.check_costs(got, ref.exact(cand), ref.own(cand), dtype)
    assert check.ok, check
