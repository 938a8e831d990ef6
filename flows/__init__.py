"""foldflow's Prefect flows; importing this package sets quiet defaults for TensorFlow/Prefect."""

import os

# Inherited by worker processes too: TensorFlow's C++ info lines and Prefect's telemetry
# (which cannot reach the internet from most clusters) are noise in a run's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
