"""Promotion between environments under the real daemon: a push is delivered to dev, promoted to
staging by itself (``promotion: auto``) and to prod only by its promote job (``manual``), each time
with dev's exact image references and no build, on one branch that carries all three values files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline import cli
from coelho_pipeline.config import Settings
from coelho_pipeline.definitions import build_definitions
from coelho_pipeline.dev import services
from coelho_pipeline.values import read_scalar
from daemon_harness import dagster_dev_with_targets
from pipeline_harness import APPS, REPO_ROOT, make_source_repo

pytestmark = [pytest.mark.docker, pytest.mark.daemon]

PROJECT = "shop"
# environment -> (values file, Application, namespace, promote_from, promotion)
ENVIRONMENTS = {
    "dev": ("k3d/helm/values-dev.yaml", "shop-dev", "shop-dev", None, None),
    "staging": ("k3d/helm/values-staging.yaml", "shop-staging", "shop-staging", "dev", "auto"),
    "prod": ("k3d/helm/values-prod.yaml", "shop-prod", "shop-prod", "staging", "manual"),
}
VALUES_KEYS = {"fastapi": "fastapi", "kafka_producers": "kafkaProducers", "sveltekit": "sveltekit"}


def targets_yaml(url: str, registry: str) -> str:
    text = (f"projects:\n  - name: {PROJECT}\n    git_url: {url}\n    registry: {registry}/{PROJECT}\n"
            f"    apps: [{', '.join(APPS)}]\n    environments:\n")
    for name, (values, app, namespace, upstream, policy) in ENVIRONMENTS.items():
        text += (f"      - name: {name}\n        values_path: {values}\n        argocd_app: {app}\n"
                 f"        deploy_namespace: {namespace}\n")
        if upstream:
            text += f"        promote_from: {upstream}\n        promotion: {policy}\n"
    return text


def split_values(root: Path) -> None:
    """The user's layout: one values file per environment, next to the chart."""
    chart = root / "k3d" / "helm"
    for values, *_ in ENVIRONMENTS.values():
        shutil.copy(chart / "values.yaml", root / values)


def images_in(repo, rev: str, environment: str) -> dict[str, str]:
    path = ENVIRONMENTS[environment][0]
    text = repo.show(rev, path)
    return {app: f"{read_scalar(text, f'{key}.image.repository', source=path)}:"
                 f"{read_scalar(text, f'{key}.image.tag', source=path)}" for app, key in VALUES_KEYS.items()}


def runs_of(instance: dg.DagsterInstance, job: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job)))


def wait_for_job(instance: dg.DagsterInstance, job: str, sha: str, timeout: float = 300) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job, tags={"dagster/partition": sha}))
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no finished {job} run for {sha} after {timeout}s")


@pytest.fixture
def chain(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host):
    from argocd_double import ArgoCDControllerDouble, application_from_yaml

    repo = make_source_repo(git_server, values_rewrite=split_values)
    double = ArgoCDControllerDouble().start()
    try:
        for values, app, namespace, *_ in ENVIRONMENTS.values():
            manifest = application_from_yaml(REPO_ROOT / "k3d" / "argocd" / "application.yaml")
            manifest["metadata"]["name"] = app
            manifest["spec"]["destination"]["namespace"] = namespace
            manifest["spec"]["source"]["helm"]["valueFiles"] = [Path(values).name]
            double.create_application(manifest, repo_url=repo.url)
        targets = tmp_path / "targets.yaml"
        targets.write_text(targets_yaml(repo.url, registry_addr))
        kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
        with dagster_dev_with_targets(tmp_path, targets, docker_host=docker_host, base_images=base_images,
                                      kubeconfig=kubeconfig) as (instance, port):
            yield repo, instance, port, targets
    finally:
        double.stop()
    assert not double.errors, f"the Argo CD double's controller failed: {double.errors}"


def test_a_delivery_is_promoted_dev_to_staging_by_itself_and_to_prod_by_its_job(chain, tmp_path: Path,
                                                                              capsys) -> None:
    repo, instance, port, targets = chain
    seed = repo.head()
    dev = wait_for_job(instance, "deliver_commit__shop__dev", seed)
    assert dev.status == dg.DagsterRunStatus.SUCCESS, dev.run_id
    staging = wait_for_job(instance, "promote__shop__staging", seed)
    assert staging.status == dg.DagsterRunStatus.SUCCESS, staging.run_id
    assert staging.tags["coelho/promoted-from-run"] == dev.run_id

    head = repo.head()
    dev_images = images_in(repo, head, "dev")
    assert images_in(repo, head, "staging") == dev_images
    assert all(f"/{PROJECT}/" in ref and ref.endswith(seed) for ref in dev_images.values())
    # Nothing was built for staging: every image asset kept dev's image, found in the registry.
    for app in APPS:
        event = instance.get_latest_materialization_event(dg.AssetKey([PROJECT, "staging", "image", app]))
        metadata = event.asset_materialization.metadata
        assert event.run_id == staging.run_id and metadata["rebuilt"].value is False
        assert metadata["image"].value == dev_images[app] and "promoted from dev" in metadata["reason"].value
    sync = instance.get_latest_materialization_event(dg.AssetKey([PROJECT, "staging", "argocd_sync"]))
    assert (sync.asset_materialization.metadata["application"].value,
            sync.asset_materialization.metadata["health"].value) == ("argocd/shop-staging", "Healthy")

    # prod waits for its promote job: manual.
    time.sleep(6)
    assert runs_of(instance, "promote__shop__prod") == []
    assert images_in(repo, repo.head(), "prod") != dev_images
    url = f"http://127.0.0.1:{port}"
    # With several targets the CLI needs to be told which one, and says which there are.
    assert cli.main(["--url", url, "status"]) == cli.EXIT_ERROR
    assert "--target with one of shop/dev, shop/prod, shop/staging" in capsys.readouterr().err
    assert cli.main(["--url", url, "--target", "shop/prod", "promote", seed]) == cli.EXIT_OK
    assert f"promoted {seed} to shop/prod" in capsys.readouterr().out
    (prod,) = runs_of(instance, "promote__shop__prod")
    assert prod.status == dg.DagsterRunStatus.SUCCESS, prod.run_id
    assert images_in(repo, repo.head(), "prod") == dev_images
    source = instance.get_latest_materialization_event(dg.AssetKey([PROJECT, "prod", "source_commit"]))
    assert source.asset_materialization.metadata["promoted_from"].value == "shop/staging"
    # One branch, three environments: each pipeline commit says which values file it wrote.
    log = services.git("log", "-n", "3", "--format=%s%x00%(trailers:key=Values-File,valueonly)%x1e", "master",
                       cwd=repo.bare)
    commits = [tuple(part.strip() for part in record.split("\x00")) for record in log.split("\x1e") if record.strip()]
    assert commits == [(f"Promote {seed} from staging to prod [skip ci]", "k3d/helm/values-prod.yaml"),
                       (f"Promote {seed} from dev to staging [skip ci]", "k3d/helm/values-staging.yaml"),
                       (f"Update image tags to {seed} [skip ci]", "k3d/helm/values-dev.yaml")]

    # A docs-only push costs dev nothing, although promotions wrote under its chart since its delivery.
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repo.clone)
    docs = repo.push({"README.md": "# docs only\n"}, "Docs")
    run = wait_for_job(instance, "deliver_commit__shop__dev", docs)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    observation = instance.fetch_observations(dg.AssetKey([PROJECT, "dev", "source_commit"]), limit=1).records[0]
    assert "no app changed" in observation.asset_observation.metadata["nothing_to_deliver"].value
    assert not instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey([PROJECT, "dev", "argocd_sync"]), asset_partitions=[docs]), limit=1).records

    # The lineage the UI draws: dev's deployment -> staging's promotion -> prod's.
    graph = build_definitions(Settings(git_url="", targets_file=str(targets), workdir=str(tmp_path / "w")),
                              apps_root=REPO_ROOT).resolve_asset_graph()
    assert dg.AssetKey([PROJECT, "dev", "argocd_sync"]) in \
        graph.get(dg.AssetKey([PROJECT, "staging", "source_commit"])).parent_keys
    assert dg.AssetKey([PROJECT, "staging", "argocd_sync"]) in \
        graph.get(dg.AssetKey([PROJECT, "prod", "source_commit"])).parent_keys
