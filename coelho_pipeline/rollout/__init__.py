"""After Argo CD says Synced and Healthy: is the rollout really done, and does it hold up?

``workloads`` reads Deployments and Pods through the Kubernetes API (these are not Argo CD's
objects), ``prometheus`` runs PromQL through Prometheus's HTTP API, and ``verify`` judges both
over a soak window: passed, failed, or inconclusive when a query has nothing to say.
"""
