"""The fast canonical encoder must produce exactly what the RFC 8785 reference produces."""

from __future__ import annotations

import math

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from skillwarden_sidecar.recording.entry import canonical

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**60), max_value=2**60)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([1.0, -0.0, 1e20, 2.5e20, 1e21, 1e-7, 5e-324, 9007199254740993.0,
                              1e-6, -8.159157735578987e-06, 9.99e-7, 1e-5, 9.999999999999999e-06])
           | st.text())
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(), inner, max_size=4), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_matches_the_reference_implementation(value: object) -> None:
    try:
        expected = bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, ValueError, OverflowError):
        return  # values the reference refuses are not records (e.g. integers beyond 2**53)
    assert canonical(value) == expected


def test_keys_beyond_the_bmp_sort_by_utf16_code_units() -> None:
    value = {"\U0001f600": 1, "\uffee": 2}  # code-point order and UTF-16 order disagree here
    assert canonical(value) == bytes(rfc8785.dumps(value))
    # UTF-16: the surrogate pair D83D DE00 sorts before FFEE, unlike code points.
    assert canonical(value).index("\U0001f600".encode()) < canonical(value).index("\uffee".encode())


def test_non_finite_numbers_are_refused() -> None:
    for bad in (math.nan, math.inf):
        try:
            canonical({"x": bad})
        except (rfc8785.CanonicalizationError, ValueError):
            continue
        raise AssertionError(f"{bad} was encoded")
