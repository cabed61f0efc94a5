"""The benchmark table says which way a ratio goes, in words; results.json keeps the
ratio itself."""

import pytest

from bench.report import speed_ratio


@pytest.mark.parametrize("ratio, text", [
    (1 / 11.3, "11.3x faster"),
    (0.0116, "86.2x faster"),
    (1.2, "1.2x slower"),
    (1.234, "1.23x slower"),
    (2.55, "2.55x slower"),
    (1.001, "same (1.00x)"),
    (0.0, "instant"),
])
def test_ratios_are_read_as_faster_or_slower(ratio, text):
    assert speed_ratio(ratio) == text
