"""Parameter-name mapping between transformers 4.x / 5.x ViT names and lewm_fast (always runs)."""

import pytest
import torch
from helpers import tiny_model

import lewm_fast as lf
from lewm_fast.interop import load_public_state_dict, to_lewm_fast_names, to_transformers_4x_names, vit_naming

# The transformers 4.x ViTModel names of one layer, written out from its module tree
# (ViTLayer: attention.attention.{query,key,value}, attention.output.dense, intermediate.dense,
# output.dense, layernorm_before, layernorm_after), as the published weights hold them.
LAYER_4X = [
    "attention.attention.query.weight", "attention.attention.query.bias",
    "attention.attention.key.weight", "attention.attention.key.bias",
    "attention.attention.value.weight", "attention.attention.value.bias",
    "attention.output.dense.weight", "attention.output.dense.bias",
    "intermediate.dense.weight", "intermediate.dense.bias",
    "output.dense.weight", "output.dense.bias",
    "layernorm_before.weight", "layernorm_before.bias",
    "layernorm_after.weight", "layernorm_after.bias",
]  # fmt: skip


def test_4x_names_cover_every_encoder_parameter():
    model = tiny_model()
    sd4 = to_transformers_4x_names(model.state_dict())
    assert vit_naming(sd4) == "4.x" and vit_naming(model.state_dict()) == "5.x"
    expected = {f"encoder.encoder.layer.{i}.{n}" for i in range(model.cfg.enc_depth) for n in LAYER_4X}
    assert expected <= set(sd4)
    assert {"encoder.layernorm.weight", "encoder.embeddings.cls_token"} <= set(sd4)
    assert to_lewm_fast_names(sd4).keys() == model.state_dict().keys()


def test_4x_state_dict_loads_with_identical_outputs():
    src = tiny_model(seed=1)
    sd4 = to_transformers_4x_names(src.state_dict())
    sd4["encoder.pooler.dense.weight"] = torch.zeros(48, 48)  # a pooler is dropped
    dst = load_public_state_dict(lf.LeWM(src.cfg).eval(), sd4)
    x = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(dst.encode(x), src.encode(x), rtol=0, atol=0)


def test_mismatched_state_dict_lists_keys():
    model = tiny_model()
    sd = dict(model.state_dict())
    del sd["predictor.pos_embedding"]
    sd["predictor.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['predictor.pos_embedding'\].*unexpected keys \(1\)"):
        load_public_state_dict(lf.LeWM(model.cfg), sd)
    sd = dict(model.state_dict())
    sd["predictor.pos_embedding"] = torch.zeros(1, 4, 32)
    with pytest.raises(ValueError, match="shapes differ"):
        load_public_state_dict(lf.LeWM(model.cfg), sd)
