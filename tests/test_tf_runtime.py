"""TensorFlow and Keras set-up per process: one configured import, per-fold sessions, threads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tasks.tf_runtime import keras_session


def test_keras_is_reset_only_when_no_other_fold_of_the_process_is_training():
    import keras

    with keras_session(1):
        assert keras.layers.Dense(1).name == "dense"  # the last fold's names are gone
        with keras_session(2):  # a second fold, on another thread of the same process
            assert keras.layers.Dense(1).name == "dense_1"  # the first's state is untouched
    with keras_session(3):
        assert keras.layers.Dense(1).name == "dense"


TWO_THREADS_IMPORT = """
import logging, sys, threading, time
from tasks.tf_runtime import import_tensorflow
sys.setswitchinterval(1e-5)  # threads take turns often: the second fold runs mid-import
seen = []
def fold():
    tf = import_tensorflow(3, None, logging.getLogger("t"))
    from tensorflow.python.framework import config
    seen.append((config.is_op_determinism_enabled(),
                 tf.config.threading.get_intra_op_parallelism_threads()))
first, second = threading.Thread(target=fold), threading.Thread(target=fold)
first.start()
while "tensorflow" not in sys.modules:  # the first fold is importing TensorFlow
    time.sleep(0.001)
second.start()
first.join(), second.join()
print("after both imports", file=sys.stderr, flush=True)  # fd 2 is the terminal again
assert seen == [(True, 3), (True, 3)], seen
"""


def fresh_process(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter (TensorFlow not imported yet); it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done


def test_a_second_thread_gets_tensorflow_only_once_it_is_configured():
    """Two folds starting at once on threads: neither may train before determinism is on."""
    assert "after both imports" in fresh_process(TWO_THREADS_IMPORT).stderr


FREEZE_AFTER_IMPORT = """
import gc, logging
from tasks.tf_runtime import import_tensorflow, keras_session
assert gc.get_freeze_count() == 0
import_tensorflow(1, None, logging.getLogger("t"))
frozen = gc.get_freeze_count()
import keras
with keras_session(1):  # clear_session's gc.collect() must not thaw them
    keras.layers.Dense(1)
print(frozen, gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_the_first_import_freezes_tensorflow_and_keras_out_of_every_folds_gc_collect():
    """Keras's clear_session collects before each fold; TensorFlow's objects are not rescanned."""
    printed = fresh_process(FREEZE_AFTER_IMPORT).stdout
    frozen, after_fold, scanned = map(int, printed.split()[-3:])
    assert frozen > 100_000  # TensorFlow and Keras: ~0.5 million objects here
    assert after_fold > 0.99 * frozen  # still frozen after a fold (a few were freed)
    assert scanned < frozen / 10  # what a fold's gc.collect() still walks
