"""What a user sees in a real terminal: `foldflow run` in a pseudo-terminal, progress bars on.

The screen must hold the progress display, the per-fold table and the summary, and no line of
TensorFlow's, absl's, CUDA's or Prefect's start-up noise from the flow or its worker processes.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # foldflow run in a pseudo-terminal (37 s)

ROOT = Path(__file__).resolve().parents[1]
# Notices that scrambled the progress bars before (issue 14): TensorFlow's C++ log lines
# (I0000/W0000/E0000 ... file.cc:line]), oneDNN, CUDA probing, absl, retracing, telemetry.
NOISE = re.compile(
    r"oneDNN|cuda|cuInit|absl|InitializeLog|retracing|telemetry|TF-TRT|tensorflow/|"
    r"^[IWEF]\d{4} |\.cc:\d+\]",
    re.IGNORECASE,
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_in_pty(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal as stdin, stdout and stderr; return code and screen."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed (the run ended)
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_a_run_in_a_terminal_shows_progress_and_results_and_no_library_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TF_"))}
    env.update(PREFECT_HOME=str(tmp_path / "home"), TERM="xterm-256color", COLUMNS="120")
    command = [
        sys.executable, "-m", "flows.cli", "run", "--epochs", "60", "--workers", "2",
        "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    code, screen = run_in_pty(command, env, timeout_s=240)
    assert code == 0, screen[-3000:]
    lines = [ANSI.sub("", line) for line in screen.splitlines()]
    noisy = [line for line in lines if NOISE.search(line)]
    assert not noisy, "library noise on the terminal:\n" + "\n".join(noisy[:20])
    text = "\n".join(lines)
    assert "folds done" in text, text[-3000:]  # the progress display was drawn
    for fold in range(1, 6):
        assert re.search(rf"^\s+fold-{fold}\s+0\.\d{{4}}", text, re.MULTILINE), text[-3000:]
    assert re.search(r"final accuracy \(out-of-fold\): 0\.\d{4}", text), text[-3000:]
    wall = re.search(r"wall time: ([\d.]+) s", text)
    assert wall and float(wall.group(1)) > 1.0, text[-1000:]
