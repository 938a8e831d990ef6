"""GPU ids from the user (`--gpus`), checked; and a check that a run kept to one fold per device.

Placing folds on GPUs is Dask's job (one worker per GPU, `GPU: 1` per fold task: see
flows/dask_cluster.py); these are pure functions, no TensorFlow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence


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


def max_overlap(intervals: Iterable[tuple[Hashable, float, float]]) -> dict[Hashable, int]:
    """From recorded (device or worker, start, end) runs, the most that overlapped on each.

    Use it on what folds report (`FoldRun.worker`/`device`, `started_at`, `finished_at`)
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
