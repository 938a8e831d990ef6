"""GPU ids from the user and the one-fold-per-device check (no GPU, no TensorFlow needed)."""

from __future__ import annotations

import pytest

from tasks.devices import check_devices, max_overlap, parse_gpus


def test_duplicate_device_ids_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match=r"GPU id\(s\) \[1\] listed more than once"):
        check_devices([0, 1, 1])
    with pytest.raises(ValueError, match="more than once"):
        parse_gpus("0,2,2")
    with pytest.raises(ValueError, match="more than once"):
        check_devices([3, 3])


@pytest.mark.parametrize("bad", [[-1], [0, "1"], [1.0], [True]])
def test_device_ids_must_be_non_negative_ints(bad):
    with pytest.raises(ValueError, match="non-negative integers"):
        check_devices(bad)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        ("", None),
        ("none", None),
        (0, None),
        ("0", None),
        (1, [0]),
        ("2", [0, 1]),
        (" 4 ", [0, 1, 2, 3]),
        ("0,1", [0, 1]),
        ("2, 0", [2, 0]),
        ("3,", [3]),
        ([1, 3], [1, 3]),
        ([], None),
    ],
)
def test_parse_gpus_count_or_ids(spec, expected):
    assert parse_gpus(spec) == expected


@pytest.mark.parametrize("spec", ["two", "0;1", -1, "-1", True])
def test_parse_gpus_rejects_nonsense(spec):
    with pytest.raises(ValueError):
        parse_gpus(spec)


def test_max_overlap_of_recorded_runs():
    runs = [
        ("gpu-0", 0.0, 1.0),
        ("gpu-0", 1.0, 2.0),  # starts when the previous one ends: no overlap
        ("gpu-1", 0.0, 2.0),
        ("gpu-1", 1.5, 3.0),  # overlaps the first gpu-1 run
    ]
    assert max_overlap(runs) == {"gpu-0": 1, "gpu-1": 2}
    assert max_overlap([]) == {}
    with pytest.raises(ValueError, match="ends before it starts"):
        max_overlap([("x", 2.0, 1.0)])
