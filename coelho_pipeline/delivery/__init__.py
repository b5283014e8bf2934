"""The delivery layer: what a commit rebuilds and writes (plan), what must hold before anything is
pushed (verify), the one function that pushes (publish), and what Argo CD is asked for (sync).

Assets call these; these call the clients in ``resources/``. Nothing here runs Dagster: the one
Dagster type met here is DeliveryTargetResource, read as plain configuration.
"""
