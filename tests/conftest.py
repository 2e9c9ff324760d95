"""Test setup: Triton kernels run under the interpreter when there is no CUDA device; GPU tests are
skipped without one; the public-code fixture is found beside the checkout when it exists."""

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURE_CANDIDATES = [
    Path(os.environ.get("LEWM_FIXTURES", "/nonexistent")) / "public_lewm_small.pt",
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "public_lewm_small.pt",
    Path(__file__).resolve().parents[1] / "shared" / "fixtures" / "public_lewm_small.pt",
]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def public_fixture():
    """The recorded outputs of the public LeWM code (../shared/fixtures), or skip."""
    for path in FIXTURE_CANDIDATES:
        if path.exists():
            return torch.load(path, weights_only=False)
    pytest.skip("public fixture not found (../shared/fixtures/public_lewm_small.pt)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
