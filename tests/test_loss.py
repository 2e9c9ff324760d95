"""The two-loss objective: value equals its definition, gradients reach every trained part."""

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model

import lewm_fast as lf


def test_loss_equals_definition():
    model = tiny_model().train()
    pixels, actions = torch.rand(3, 4, 3, 28, 28), torch.randn(3, 4, model.cfg.action_block_dim)
    A = lf.draw_directions(model.cfg.embed_dim, 64)
    reg = lambda proj: lf.sigreg(proj, A)
    torch.manual_seed(0)
    out = lf.lewm_loss(model, pixels, actions, reg, lambd=0.09)
    torch.manual_seed(0)
    emb = model.encode(pixels)
    pred = model.predict(emb[:, :3], model.embed_actions(actions)[:, :3])
    expected = F.mse_loss(pred, emb[:, 1:]) + 0.09 * lf.sigreg(emb.transpose(0, 1), A)
    torch.testing.assert_close(out["loss"], expected)


def test_gradients_reach_every_part():
    model = tiny_model().train()
    out = lf.lewm_loss(model, torch.rand(4, 4, 3, 28, 28), torch.randn(4, 4, 10), lf.SIGReg(num_proj=32))
    out["loss"].backward()
    for part in ("encoder", "projector", "predictor", "action_encoder", "pred_proj"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part


def test_bad_window():
    model = tiny_model()
    with pytest.raises(ValueError, match="pixels: expected 2 <= T <= num_frames"):
        lf.lewm_loss(model, torch.rand(2, 5, 3, 28, 28), torch.randn(2, 5, 10), lf.SIGReg(num_proj=8))
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 4, 10\)"):
        lf.lewm_loss(model, torch.rand(2, 4, 3, 28, 28), torch.randn(2, 3, 10), lf.SIGReg(num_proj=8))
