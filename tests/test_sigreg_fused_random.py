"""The fused SIGReg backends against the reference on random shapes and scales drawn by hypothesis
(a separate file so that the fixed-shape tests run where hypothesis is not installed)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sigreg_fused import FUSED, check_random_case, has_cpp


@pytest.mark.parametrize("backend", FUSED)
@settings(max_examples=20, deadline=None)
@given(
    T=st.integers(1, 3), B=st.integers(1, 40), D=st.integers(1, 40), M=st.integers(1, 80), K=st.integers(2, 9),
    t_max=st.floats(0.5, 4.0), scale=st.floats(0.1, 10.0), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_random_shapes(backend, T, B, D, M, K, t_max, scale, seed):
    check_random_case(backend, T, B, D, M, K, t_max, scale, seed)


@settings(max_examples=15, deadline=None)
@given(
    T=st.integers(1, 5), B=st.integers(1, 600), D=st.integers(1, 256), M=st.integers(1, 700), K=st.integers(2, 33),
    t_max=st.floats(0.5, 5.0), scale=st.floats(0.1, 10.0), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_random_larger_shapes_cpp(T, B, D, M, K, t_max, scale, seed):
    if not has_cpp():
        pytest.skip("C++ extension unavailable")
    check_random_case("cpp", T, B, D, M, K, t_max, scale, seed)
