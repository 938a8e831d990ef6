"""One fold per GPU: the pure device-assignment logic (no GPU, no TensorFlow needed)."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.devices import (
    Placement,
    assign_folds_to_devices,
    check_devices,
    device_queues,
    max_concurrency_per_device,
    max_overlap,
    parse_gpus,
    waves,
)


@pytest.mark.parametrize("n_folds", [0, 1, 2, 3, 5, 7, 10])
@pytest.mark.parametrize("devices", [[0], [0, 1], [1, 0], [3, 5, 6], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_every_fold_exactly_once_and_never_two_on_one_device(n_folds, devices):
    schedule = assign_folds_to_devices(n_folds, devices)

    assert sorted(p.fold for p in schedule) == list(range(n_folds))
    assert {p.device for p in schedule} <= set(devices)
    assert max_concurrency_per_device(schedule) == (1 if n_folds else 0)
    for wave in waves(schedule):
        on_device = Counter(p.device for p in wave)
        assert max(on_device.values()) == 1
        assert len(wave) <= len(devices)
    # as few waves as possible, and the load spread evenly over the devices
    assert len(waves(schedule)) == -(-n_folds // len(devices))
    loads = [len(folds) for folds in device_queues(schedule).values()]
    assert not loads or max(loads) - min(loads) <= 1


def test_five_folds_on_two_gpus():
    schedule = assign_folds_to_devices(5, [0, 1])

    assert [[(p.fold, p.device) for p in wave] for wave in waves(schedule)] == [
        [(0, 0), (1, 1)],
        [(2, 0), (3, 1)],
        [(4, 0)],
    ]
    assert device_queues(schedule) == {0: [0, 2, 4], 1: [1, 3]}


def test_more_devices_than_folds_uses_one_wave_and_leaves_devices_idle():
    schedule = assign_folds_to_devices(2, [4, 5, 6, 7])

    assert schedule == [Placement(0, 4, 0), Placement(1, 5, 0)]
    assert len(waves(schedule)) == 1
    assert max_concurrency_per_device(schedule) == 1


@pytest.mark.parametrize("devices", [[], None])
def test_no_devices_means_cpu(devices):
    schedule = assign_folds_to_devices(3, devices)

    assert [p.device for p in schedule] == [None, None, None]
    assert len(waves(schedule)) == 1  # the CPU has no one-fold limit; workers bound it
    assert device_queues(schedule) == {None: [0, 1, 2]}
    assert max_concurrency_per_device(schedule) == 0


def test_duplicate_device_ids_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match=r"GPU id\(s\) \[1\] listed more than once"):
        assign_folds_to_devices(4, [0, 1, 1])
    with pytest.raises(ValueError, match="more than once"):
        parse_gpus("0,2,2")
    with pytest.raises(ValueError, match="more than once"):
        check_devices([3, 3])


@pytest.mark.parametrize("bad", [[-1], [0, "1"], [1.0], [True]])
def test_device_ids_must_be_non_negative_ints(bad):
    with pytest.raises(ValueError, match="non-negative integers"):
        check_devices(bad)


def test_negative_fold_count_is_rejected():
    with pytest.raises(ValueError, match="n_folds"):
        assign_folds_to_devices(-1, [0])


def test_max_concurrency_sees_a_bad_schedule():
    bad = [Placement(0, 0, 0), Placement(1, 0, 0), Placement(2, 1, 0)]
    assert max_concurrency_per_device(bad) == 2


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
