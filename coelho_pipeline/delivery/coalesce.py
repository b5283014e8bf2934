"""When the delivery of a commit has nothing to do: a commit that changes no image and no chart, or
an automatic delivery that a newer one, already queued, will do in its place."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from coelho_pipeline.catalog import App
from coelho_pipeline.domain import AppPlan
from coelho_pipeline.resources.git import GitRemote
from coelho_pipeline.values import read_scalar

# Runs the push sensor (or the push webhook on its behalf) requested: the only ones a newer delivery
# may stand in for. A run someone launched by hand always does its work.
SENSOR_TAG = "dagster/sensor_name"
SOURCE_SHA_TAG = "coelho/source-sha"
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]


def unchanged_delivery(plans: Sequence[AppPlan], apps: Sequence[App], *, sha: str, tip_values: str,
                       values_source: str, chart_path: str, remote: GitRemote,
                       other_values_files: Sequence[str] = ()) -> str | None:
    """Why delivering ``sha`` would change nothing, or None when it might.

    Nothing changes when no image is rebuilt, the values file at the branch tip already names every
    app's kept image, and no file under the chart changed since the manifest commit of the newest
    delivery (the newest of the tags); the values files of the project's other environments (under
    the same chart) are the pipeline's own writes, not a change. Anything unclear (a tag that is not
    a commit, histories that diverged, no manifest commit found) means a full delivery.
    """
    if any(p.rebuild or not p.deployed_tag for p in plans):
        return None
    by_app = {p.app: p for p in plans}
    for app in apps:
        plan = by_app[app.name]
        if (read_scalar(tip_values, app.tag_path, source=values_source) != plan.deployed_tag
                or read_scalar(tip_values, app.repository_path, source=values_source) != plan.repository):
            return None
    newest = plans[0].deployed_tag
    assert newest is not None
    for plan in plans[1:]:
        tag = plan.deployed_tag
        assert tag is not None
        if tag == newest or remote.is_ancestor(tag, newest):
            continue
        if not remote.is_ancestor(newest, tag):
            return None  # neither descends from the other: not one line of deliveries
        newest = tag
    # From the manifest commit of that delivery, not the source commit: the pipeline's own write of
    # the values file lies in between, and is not a change to deliver.
    manifest = remote.find_manifest_commit(newest)
    if manifest is None or set(remote.changed_paths(manifest, sha, chart_path)) - set(other_values_files):
        return None
    return (f"no app changed, and nothing under {chart_path}/ since {manifest[:12]} (the delivery of "
            f"{newest[:12]}): the images, the values file and the chart stay as they are")


def newer_queued_delivery(instance: dg.DagsterInstance, run: dg.DagsterRun, sha: str,
                          remote: GitRemote) -> str | None:
    """The run id of an automatic delivery, queued or running, of a commit that descends from ``sha``:
    it delivers everything ``sha`` changed (its plan starts from an older tag), so ``sha``'s own
    delivery would only add a manifest commit and a sync that the next one replaces at once."""
    if SENSOR_TAG not in run.tags:
        return None
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=run.job_name, statuses=_IN_FLIGHT,
                                                             tags={SENSOR_TAG: run.tags[SENSOR_TAG]}))
    for record in records:
        other = record.dagster_run
        other_sha = other.tags.get(SOURCE_SHA_TAG)
        if other.run_id == run.run_id or not other_sha or other_sha == sha:
            continue
        if remote.has_commit(other_sha) and remote.is_ancestor(sha, other_sha):
            return other.run_id
    return None
