"""The deployments, defined once in prefect.yaml: `foldflow serve` serves them from there."""

from __future__ import annotations

from typing import Any

from tasks.config import PROJECT_ROOT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
ENTRYPOINTS = {
    "cross-validate": "flows/cross_validate.py:cross_validate",
    "predict": "flows/predict.py:predict",
    "tune": "flows/tune.py:tune",
}


def deployment_of(flow_name: str) -> dict[str, Any]:
    """prefect.yaml's deployment of a flow: its name, description, tags and schedule."""
    import yaml

    spec = yaml.safe_load(PREFECT_YAML.read_text())
    for deployment in spec["deployments"]:
        if deployment["entrypoint"] == ENTRYPOINTS[flow_name]:
            return deployment
    raise KeyError(f"{PREFECT_YAML} has no deployment of {ENTRYPOINTS[flow_name]}")


def default_cron(deployment: dict[str, Any]) -> str | None:
    """The deployment's first cron schedule, if it has one."""
    return next((s["cron"] for s in deployment.get("schedules") or [] if "cron" in s), None)
