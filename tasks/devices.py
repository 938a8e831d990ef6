"""One fold per GPU: which fold runs on which device, and when (pure functions, no TensorFlow).

A schedule places fold `i` on `devices[i % n]` in wave `i // n`: a wave holds at most one fold
per device, so running the waves one after another (or giving each device its own queue)
never puts two folds on one GPU at the same time. An empty device list means CPU only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """Where and when one fold trains: `device` None is the CPU."""

    fold: int
    device: int | None
    wave: int


def check_devices(devices: Iterable[int]) -> list[int]:
    """Validate a list of GPU ids: non-negative integers, each named once."""
    ids = list(devices)
    for device in ids:
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise ValueError(f"GPU ids must be non-negative integers, got {device!r}")
    seen: set[int] = set()
    duplicates = sorted({d for d in ids if d in seen or seen.add(d)})
    if duplicates:
        raise ValueError(
            f"GPU id(s) {duplicates} listed more than once in {ids}: two folds would share "
            "one GPU; name each GPU once"
        )
    return ids


def parse_gpus(spec: str | int | Sequence[int] | None) -> list[int] | None:
    """A `--gpus` value as GPU ids; None (CPU only) for None, "", 0 or "none".

    A bare number is a count ("2" -> [0, 1]); a comma list names ids ("0,2" -> [0, 2];
    "3," -> [3] for the single GPU 3); a list of ints is taken as ids.
    """
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise ValueError(f"--gpus must be a count or a list of ids, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"GPU count must be >= 0, got {spec}")
        return list(range(spec)) or None
    if isinstance(spec, str):
        text = spec.replace(" ", "").lower()
        if text in ("", "none", "cpu"):
            return None
        try:
            parts = [int(part) for part in text.split(",") if part]
        except ValueError:
            raise ValueError(
                f"--gpus must be a count (e.g. 2) or comma-separated ids (e.g. 0,1), got {spec!r}"
            ) from None
        if "," not in text:
            return parse_gpus(parts[0])
        return check_devices(parts) or None
    return check_devices(spec) or None


def assign_folds_to_devices(n_folds: int, devices: Sequence[int] | None) -> list[Placement]:
    """Place folds 0..n_folds-1 round-robin on the devices, in waves of one fold per device.

    With no devices every fold goes to the CPU in wave 0 (the CPU has no one-fold limit; the
    number of workers bounds it instead).
    """
    if n_folds < 0:
        raise ValueError(f"n_folds must be >= 0, got {n_folds}")
    ids = check_devices(devices or [])
    if not ids:
        return [Placement(fold, None, 0) for fold in range(n_folds)]
    return [Placement(fold, ids[fold % len(ids)], fold // len(ids)) for fold in range(n_folds)]


def waves(schedule: Iterable[Placement]) -> list[list[Placement]]:
    """The schedule grouped into waves, in order; each wave can run all at once."""
    grouped: dict[int, list[Placement]] = defaultdict(list)
    for placement in schedule:
        grouped[placement.wave].append(placement)
    return [sorted(grouped[w], key=lambda p: p.fold) for w in sorted(grouped)]


def device_queues(schedule: Iterable[Placement]) -> dict[int | None, list[int]]:
    """Each device's folds, in the order it trains them (None = CPU)."""
    queues: dict[int | None, list[int]] = defaultdict(list)
    for placement in sorted(schedule, key=lambda p: (p.wave, p.fold)):
        queues[placement.device].append(placement.fold)
    return dict(queues)


def max_concurrency_per_device(schedule: Iterable[Placement]) -> int:
    """The most folds any one GPU runs at once under the schedule (0 when CPU only)."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for placement in schedule:
        if placement.device is not None:
            counts[(placement.wave, placement.device)] += 1
    return max(counts.values(), default=0)


def max_overlap(intervals: Iterable[tuple[Hashable, float, float]]) -> dict[Hashable, int]:
    """From recorded (device or worker, start, end) runs, the most that overlapped on each.

    Use it on what folds report (`FoldResult.worker`/`device`, `started_at`, `finished_at`)
    to check a real run kept to one fold per device. Touching ends do not overlap.
    """
    events: dict[Hashable, list[tuple[float, int]]] = defaultdict(list)
    for key, start, end in intervals:
        if end < start:
            raise ValueError(f"interval on {key!r} ends before it starts: {start} > {end}")
        events[key] += [(start, 1), (end, -1)]
    peaks: dict[Hashable, int] = {}
    for key, marks in events.items():
        running = peak = 0
        for _, step in sorted(marks):  # at equal times the end (-1) sorts before the start
            running += step
            peak = max(peak, running)
        peaks[key] = peak
    return peaks
