"""The model: published sizes, shapes, position-embedding interpolation, config round trips, bad input."""

import os

import pytest
import torch
from helpers import tiny_config, tiny_model

import lewm_fast as lf


def test_published_size_parameter_count():
    counts = lf.LeWM().num_parameters()
    assert counts["total"] == pytest.approx(18.0e6, rel=0.01)
    assert counts["encoder"] == pytest.approx(5.5e6, rel=0.01)
    assert counts["predictor"] == pytest.approx(10.8e6, rel=0.01)
    assert counts["projector"] == counts["pred_proj"] == pytest.approx(0.8e6, rel=0.01)
    assert counts["action_encoder"] == pytest.approx(0.16e6, rel=0.03)


def test_shapes():
    model = tiny_model()
    cfg = model.cfg
    with torch.no_grad():
        emb = model.encode(torch.rand(2, 3, 3, 28, 28))
        act = model.embed_actions(torch.randn(2, 3, cfg.action_block_dim))
        out = model.predict(emb, act)
    assert emb.shape == act.shape == out.shape == (2, 3, cfg.embed_dim)


def test_other_image_size_interpolates_position_embeddings():
    model = tiny_model()
    with torch.no_grad():
        emb = model.encode(torch.rand(1, 2, 3, 42, 42))
        # the trained size uses the table unchanged; interpolating it to its own size is the identity
        table = model.encoder.embeddings.position_table(28, 28)
    assert emb.shape == (1, 2, model.cfg.embed_dim) and torch.isfinite(emb).all()
    assert table is model.encoder.embeddings.position_embeddings
    assert model.encoder.embeddings.position_table(42, 42).shape[1] == 1 + 36


def test_predictor_is_causal():
    """In float64, where the kernels' rounding (which may differ with a row's neighbours in fp32) is ~1e-16:
    a change to frame 2 changes only frame 2's output."""
    model = tiny_model().double()
    emb, act = torch.randn(1, 3, 32, dtype=torch.float64), torch.randn(1, 3, 32, dtype=torch.float64)
    with torch.no_grad():
        a = model.predict(emb, act)
        emb2 = emb.clone()
        emb2[:, 2] += torch.randn(32, dtype=torch.float64)  # not a constant: LayerNorm removes a constant shift
        b = model.predict(emb2, act)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=1e-12)
    assert (a[:, 2] - b[:, 2]).abs().max() > 1e-3


def test_published_config_round_trip():
    cfg = lf.LeWMConfig()
    assert lf.LeWMConfig.from_published(cfg.to_published()) == cfg
    small = tiny_config(action_dim=3, frameskip=2)
    assert lf.LeWMConfig.from_published(small.to_published()) == small


def test_published_config_names_the_vit_size_like_the_published_file():
    published = lf.LeWMConfig().to_published()
    assert published["encoder"]["size"] == "tiny" and "hidden_size" not in published["encoder"]
    assert set(published["action_encoder"]) == {"_target_", "input_dim", "emb_dim"}
    published["encoder"]["size"] = "gigantic"
    with pytest.raises(ValueError, match="config.encoder.size"):
        lf.LeWMConfig.from_published(published)
    del published["predictor"]
    with pytest.raises(ValueError, match="'predictor' section"):
        lf.LeWMConfig.from_published(published)


def test_official_format_round_trip(tmp_path):
    from lewm_fast.interop.official import load_official, save_official

    model = tiny_model(seed=2, action_dim=3, frameskip=2)
    save_official(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "weights.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "ckpt" / "weights.pt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    loaded = load_official(tmp_path / "ckpt")
    assert loaded.cfg == model.cfg
    x = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), model.encode(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint folder or file"):
        load_official(tmp_path / "missing")
    (tmp_path / "lone").mkdir()
    (tmp_path / "ckpt" / "weights.pt").rename(tmp_path / "lone" / "weights.pt")
    with pytest.raises(FileNotFoundError, match="expected a config.json beside"):
        load_official(tmp_path / "lone" / "weights.pt")


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(image_size=30), "image_size"),
        (dict(enc_heads=5), "enc_dim"),
        (dict(pred_depth=0), "pred_depth"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_config(changes, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**changes)


def test_bad_inputs_name_the_argument():
    model = tiny_model()
    a = model.cfg.action_block_dim
    with pytest.raises(ValueError, match=r"pixels: expected shape \(B, T, 3, H, W\), got \(2, 3, 28, 28\)"):
        model.encode(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="divisible by patch_size=7"):
        model.encode(torch.rand(1, 1, 3, 30, 28))
    with pytest.raises(TypeError, match="pixels: expected a floating dtype"):
        model.encode(torch.zeros(1, 1, 3, 28, 28, dtype=torch.uint8))
    bad = torch.rand(1, 1, 3, 28, 28)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pixels: expected finite values"):
        model.encode(bad)
    with pytest.raises(ValueError, match=rf"actions: expected shape \(B, T, {a}\), got \(1, 2, {a + 1}\)"):
        model.embed_actions(torch.randn(1, 2, a + 1))
    with pytest.raises(ValueError, match="actions: expected finite"):
        model.embed_actions(torch.full((1, 2, a), float("inf")))
    with pytest.raises(ValueError, match="act_emb: expected shape"):
        model.predict(torch.randn(2, 3, 32), torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="at most num_frames=3"):
        model.predict(torch.randn(1, 4, 32), torch.randn(1, 4, 32))
    with pytest.raises(TypeError, match="cfg: expected a LeWMConfig"):
        lf.LeWM({"image_size": 28})
