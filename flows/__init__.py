"""foldflow's Prefect flows: the DAGs, their fan-out, the CLI and process set-up."""
