"""Kubernetes deploy helpers for the recsys Helm chart.

- `chart`: render the chart with the real `helm` binary and look objects up (used by tests and the CLI).
- `validation`: offline validation of rendered objects (Kubernetes schemas + CRD schemas shipped in the repo).
- `cluster`: read RayService/RayJob status and create training RayJobs through the Kubernetes API.
- `cli`: the `recsys k8s` click group.
"""
