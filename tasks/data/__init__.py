"""Bring your own data: describe, read and validate any table; no Prefect, no TensorFlow."""
