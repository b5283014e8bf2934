"""Several targets in one code location: two projects from one COELHO_TARGETS file, each with its
own real git remote, delivered by the real daemon at the same time; and the Definitions the factory
builds for them (names, keys, resources, writers)."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.config import Settings
from coelho_pipeline.definitions import build_definitions
from coelho_pipeline.dev import services
from coelho_pipeline.jobs import MANIFEST_WRITER_TAG, TARGET_TAG
from daemon_harness import dagster_dev_with_targets, wait_for_run
from pipeline_harness import APPS, REPO_ROOT, make_source_repo

# Names no shipped file mentions: the user's own projects, environments, Applications and namespaces.
PROJECTS = {"alpha": ("staging", "alpha-staging", "team-alpha"), "beta": ("live", "beta-live", "team-beta")}


def targets_yaml(repos: dict, registry: str, *, extra_environment: str = "") -> str:
    text = "projects:\n"
    for project, (environment, app, namespace) in PROJECTS.items():
        text += (f"  - name: {project}\n"
                 f"    git_url: {repos[project].url}\n"
                 f"    registry: {registry}/{project}\n"
                 f"    apps: [{', '.join(APPS)}]\n"
                 f"    environments:\n"
                 f"      - name: {environment}\n"
                 f"        argocd_app: {app}\n"
                 f"        deploy_namespace: {namespace}\n")
        if project == "alpha" and extra_environment:
            text += extra_environment
    return text


def test_the_factory_builds_one_graph_per_target_with_its_own_names_and_resources(tmp_path: Path) -> None:
    file = tmp_path / "targets.yaml"
    repos = {p: type("R", (), {"url": f"git://127.0.0.1:9/{p}.git"}) for p in PROJECTS}
    second = ("      - name: qa\n"
              "        values_path: k3d/helm/values-qa.yaml\n"
              "        argocd_app: alpha-qa\n"
              "        deploy_namespace: team-alpha-qa\n")
    file.write_text(targets_yaml(repos, "registry.team.test:5443", extra_environment=second))
    defs = build_definitions(Settings(git_url="", targets_file=str(file), workdir=str(tmp_path / "work")),
                             apps_root=REPO_ROOT)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for prefix in ("alpha/staging", "alpha/qa", "beta/live"):
        assert {f"{prefix}/source_commit", f"{prefix}/image/fastapi", f"{prefix}/helm_values",
                f"{prefix}/manifest_commit", f"{prefix}/argocd_sync", f"{prefix}/live_state",
                f"{prefix}/rollback_commit", f"{prefix}/delivery_hold", f"{prefix}/delivery_metrics"} <= keys
    assert not {k for k in keys if k.count("/") < 2}, "an asset without its target's prefix"
    graph = defs.resolve_asset_graph()
    parents = graph.get(dg.AssetKey(["beta", "live", "manifest_commit"])).parent_keys
    assert parents == {dg.AssetKey(["beta", "live", "helm_values"]), dg.AssetKey(["beta", "live", "source_commit"])}

    deliver = defs.resolve_job_def("deliver_commit__beta__live")
    assert {k.to_user_string() for k in deliver.asset_layer.selected_asset_keys} == {
        "beta/live/source_commit", "beta/live/image/fastapi", "beta/live/image/kafka_producers",
        "beta/live/image/sveltekit", "beta/live/helm_values", "beta/live/manifest_commit", "beta/live/argocd_sync"}
    assert deliver.tags[TARGET_TAG] == "beta/live"
    # One writer per project: alpha's two environments share the tag value and the pool; beta has its own.
    tags = {name: defs.resolve_job_def(f"deliver_commit__{name}").tags[MANIFEST_WRITER_TAG]
            for name in ("alpha__staging", "alpha__qa", "beta__live")}
    assert tags == {"alpha__staging": "alpha", "alpha__qa": "alpha", "beta__live": "beta"}
    pools = {frozenset(graph.get(dg.AssetKey([p, e, "manifest_commit"])).pools) for p, e in
             (("alpha", "staging"), ("alpha", "qa"), ("beta", "live"))}
    assert pools == {frozenset({"git_manifest__alpha"}), frozenset({"git_manifest__beta"})}
    for name in ("git_push_sensor", "delivery_failure_sensor"):
        for target in ("alpha__staging", "alpha__qa", "beta__live"):
            assert defs.resolve_sensor_def(f"{name}__{target}")
    assert defs.resolve_job_def("release_hold__alpha__qa") and defs.resolve_job_def("runbook_status__beta__live")
    # Each target's resources point at its own remote, registry, Application and files.
    resources = defs.resources
    assert resources["git__beta__live"].url == "git://127.0.0.1:9/beta.git"
    assert resources["registry__beta__live"].prefix == "registry.team.test:5443/beta"
    assert (resources["argocd__alpha__qa"].app_name, resources["target__alpha__qa"].values_path) == \
        ("alpha-qa", "k3d/helm/values-qa.yaml")
    caches = {resources[f"git__{t}"].cache_dir for t in ("alpha__staging", "alpha__qa", "beta__live")}
    assert len(caches) == 3, "two targets would fetch into one cache clone"
    assert "git" not in resources and "deliver_commit" not in {j.name for j in defs.jobs}


@pytest.fixture
def two_projects(tmp_path: Path, git_server, registry_addr: str, base_images, docker_host):
    """`dagster dev` with a targets file of two projects, each on its own remote, both Applications
    served by one Argo CD controller double; yields (repos, instance)."""
    from argocd_double import ArgoCDControllerDouble, application_from_yaml

    # Each project's own repository (its own first commit, not a copy of the other's).
    repos = {project: make_source_repo(git_server, values_rewrite=lambda root, p=project: (
        root / "PROJECT").write_text(f"{p}\n")) for project in PROJECTS}
    double = ArgoCDControllerDouble().start()
    try:
        for project, (_, app, namespace) in PROJECTS.items():
            manifest = application_from_yaml(REPO_ROOT / "k3d" / "argocd" / "application.yaml")
            manifest["metadata"]["name"] = app
            manifest["spec"]["destination"]["namespace"] = namespace
            double.create_application(manifest, repo_url=repos[project].url)
        kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
        targets = tmp_path / "config" / "targets.yaml"
        targets.parent.mkdir()
        targets.write_text(targets_yaml(repos, registry_addr))
        with dagster_dev_with_targets(tmp_path, targets, docker_host=docker_host, base_images=base_images,
                                      kubeconfig=kubeconfig) as (instance, _):
            yield repos, instance
    finally:
        double.stop()
    assert not double.errors, f"the Argo CD double's controller failed: {double.errors}"


@pytest.mark.docker
@pytest.mark.daemon
def test_two_projects_deliver_at_once_each_to_its_own_branch(two_projects) -> None:
    repos, instance = two_projects
    seeds = {project: repo.head() for project, repo in repos.items()}
    assert seeds["alpha"] != seeds["beta"]
    runs = {project: wait_for_run(instance, sha) for project, sha in seeds.items()}
    for project, run in runs.items():
        environment = PROJECTS[project][0]
        assert run.status == dg.DagsterRunStatus.SUCCESS, (project, run.run_id)
        assert run.job_name == f"deliver_commit__{project}__{environment}"
        assert run.tags[MANIFEST_WRITER_TAG] == project
    # Two projects never wait for each other's writer: the two deliveries ran side by side.
    records = {p: instance.get_run_record_by_id(r.run_id) for p, r in runs.items()}
    alpha, beta = records["alpha"], records["beta"]
    assert alpha.start_time < beta.end_time and beta.start_time < alpha.end_time, \
        "the two projects' deliveries were serialized"

    # A push to alpha delivers alpha only; beta's branch keeps its own history.
    services.git("pull", "-q", "--ff-only", "origin", "master", cwd=repos["alpha"].clone)
    change = repos["alpha"].push({"apps/fastapi/main.py": "print('alpha only')\n"}, "FastAPI: alpha change")
    run = wait_for_run(instance, change)
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "deliver_commit__alpha__staging"
    time.sleep(6)  # a sensor loop or more: beta's sensor must have nothing to deliver
    assert len(instance.get_runs(filters=dg.RunsFilter(job_name="deliver_commit__beta__live"))) == 1
    for project, repo in repos.items():
        subjects = [subject for _, _, subject in repo.log(10)]
        delivered = [s.removeprefix("Update image tags to ").removesuffix(" [skip ci]")
                     for s in subjects if s.startswith("Update image tags to ")]
        expected = [change, seeds["alpha"]] if project == "alpha" else [seeds["beta"]]
        assert delivered == expected, (project, subjects)

    # Each target's assets were materialized by its own runs, under its own keys and images.
    for project, (environment, app, _) in PROJECTS.items():
        sync = instance.get_latest_materialization_event(dg.AssetKey([project, environment, "argocd_sync"]))
        assert sync is not None
        assert instance.get_run_by_id(sync.run_id).job_name == f"deliver_commit__{project}__{environment}"
        metadata = sync.asset_materialization.metadata
        assert metadata["application"].value == f"argocd/{app}"
        assert (metadata["sync"].value, metadata["health"].value) == ("Synced", "Healthy")
        image = instance.get_latest_materialization_event(dg.AssetKey([project, environment, "image", "fastapi"]))
        assert f"/{project}/fastapi:" in image.asset_materialization.metadata["image"].value
    assert instance.get_latest_materialization_event(dg.AssetKey("source_commit")) is None
    assert set(instance.get_dynamic_partitions("source_commits__alpha__staging")) == {seeds["alpha"], change}
    assert set(instance.get_dynamic_partitions("source_commits__beta__live")) == {seeds["beta"]}


def test_the_code_location_refuses_a_bad_targets_file_naming_file_line_and_key(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from coelho_pipeline import definitions
    from coelho_pipeline.targets import TargetsError

    file = tmp_path / "targets.yaml"
    file.write_text("projects:\n"
                    "  - name: shop\n"
                    "    git_url: git://127.0.0.1:9/shop.git\n"
                    "    environments:\n"
                    "      - name: dev\n"
                    "        values_path: k3d/helm/values-dev.yaml\n"
                    "        argocd_app: shop-dev\n"
                    "        promote_from: prod\n"
                    "      - name: prod\n"
                    "        values_path: k3d/helm/values-prod.yaml\n"
                    "        argocd_app: shop-prod\n"
                    "        promote_from: dev\n")
    monkeypatch.delenv("COELHO_GIT_URL", raising=False)
    monkeypatch.setenv("COELHO_TARGETS", str(file))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(TargetsError) as raised:
        definitions.defs()
    message = str(raised.value)
    assert message.startswith(f"{file}:8: projects[0].environments[0].promote_from:"), message
    assert "dev -> prod -> dev" in message, message


def chain_definitions(tmp_path: Path, promotion: str) -> dg.Definitions:
    file = tmp_path / "targets.yaml"
    file.write_text("projects:\n"
                    "  - name: shop\n"
                    "    git_url: git://127.0.0.1:9/shop.git\n"
                    f"    apps: [{', '.join(APPS)}]\n"
                    "    environments:\n"
                    "      - {name: dev, values_path: k3d/helm/values-dev.yaml, argocd_app: shop-dev}\n"
                    "      - {name: prod, values_path: k3d/helm/values-prod.yaml, argocd_app: shop-prod,\n"
                    f"         promote_from: dev, promotion: {promotion}}}\n")
    return build_definitions(Settings(git_url="", targets_file=str(file), workdir=str(tmp_path / "work")),
                             apps_root=REPO_ROOT)


def record(instance: dg.DagsterInstance, key: list[str], sha: str, **metadata: object) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(key), partition=sha, metadata=metadata))


def test_a_delivery_not_verified_upstream_is_not_promoted(tmp_path: Path) -> None:
    defs = chain_definitions(tmp_path, "manual")
    # prod watches no pushes and promotes nothing by itself (manual); dev has no promotion to wait for.
    sensors = {s.name for s in defs.sensors}
    assert sensors == {"git_push_sensor__shop__dev", "delivery_failure_sensor__shop__dev",
                       "delivery_failure_sensor__shop__prod"}
    sha = "a" * 40
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source_commits__shop__dev", [sha])
        # dev "delivered" it, but its verification was inconclusive: nothing to promote.
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=dg.AssetKey(["shop", "dev", "argocd_sync"]), partition=sha,
            metadata={"sync": "Synced", "health": "Healthy", "verification": "inconclusive",
                      "manifest_commit": "b" * 40}))
        result = defs.resolve_job_def("promote__shop__prod").execute_in_process(
            partition_key=sha, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "shop__prod__source_commit"
    assert (f"{sha} is not promoted from shop/dev: its rollout verification in dev is inconclusive, not passed"
            in failure.step_failure_data.error.message)
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]


def test_auto_promotion_takes_the_newest_verified_delivery_once_and_waits_out_a_hold(tmp_path: Path) -> None:
    from coelho_pipeline.hold import hold_event
    from coelho_pipeline.targets import load_targets

    defs = chain_definitions(tmp_path, "auto")
    sensor = defs.resolve_sensor_def("promotion_sensor__shop__prod")
    _, prod = load_targets(tmp_path / "targets.yaml", apps_root=REPO_ROOT)
    old, new = "a" * 40, "b" * 40
    verified = {"sync": "Synced", "health": "Healthy", "verification": "passed", "manifest_commit": "c" * 40}
    with dg.instance_for_test() as instance:
        def tick() -> dg.RunRequest | dg.SkipReason:
            return sensor(dg.build_sensor_context(instance=instance))

        assert "nothing delivered to shop/dev yet" in tick().skip_message
        record(instance, ["shop", "dev", "argocd_sync"], old, **verified)
        record(instance, ["shop", "dev", "argocd_sync"], new, **{**verified, "verification": "inconclusive"})
        assert "inconclusive, not passed" in tick().skip_message  # the newest is not verified: nothing moves
        record(instance, ["shop", "dev", "argocd_sync"], new, **verified)
        request = tick()
        assert isinstance(request, dg.RunRequest) and request.partition_key == new
        assert request.run_key.startswith("promote:")  # one request per upstream run
        # A hold in prod: the delivery waits, it is not dropped.
        instance.report_runless_asset_event(hold_event(prod, held=True, by="rollback to a", reason="bad"))
        assert "waits: shop/prod is held" in tick().skip_message
        instance.report_runless_asset_event(hold_event(prod, held=False, by="release", reason="fixed"))
        assert tick().partition_key == new
        # What prod already had (say, then rolled back from) is not promoted again by itself.
        record(instance, ["shop", "prod", "manifest_commit"], new, commit="d" * 40)
        assert "already promoted" in tick().skip_message
        # What dev took back after verifying it is not promoted at all.
        record(instance, ["shop", "dev", "argocd_sync"], old, **verified)
        record(instance, ["shop", "dev", "rollback_commit"], new, rolled_back_from=old)
        assert f"dev rolled it back (to {new}) after it was verified" in tick().skip_message


def test_a_promoted_environment_is_rolled_back_while_upstream_deliveries_queue(tmp_path: Path) -> None:
    from coelho_pipeline.auto_rollback import DeployFailure, decide
    from coelho_pipeline.jobs import delivery_tags
    from coelho_pipeline.targets import load_targets

    chain_definitions(tmp_path, "manual")
    dev, prod = load_targets(tmp_path / "targets.yaml", apps_root=REPO_ROOT)
    good, failed = "a" * 40, "f" * 40
    with dg.instance_for_test() as instance:
        record(instance, ["shop", "prod", "argocd_sync"], good, verification="passed")
        # dev's deliveries share the project's writer with prod, but are not prod's business.
        running = dg.DagsterRun(job_name=dev.delivery_job, run_id="d" * 32, status=dg.DagsterRunStatus.STARTED,
                                tags={"dagster/partition": "e" * 40, **delivery_tags(dev)})
        run = dg.DagsterRun(job_name=prod.delivery_job, run_id="p" * 32, status=dg.DagsterRunStatus.FAILURE,
                            tags={"dagster/partition": failed, **delivery_tags(prod)})
        instance.add_run(running)
        instance.add_run(run)
        decision = decide(instance, prod, run, DeployFailure.DEGRADED.value, writer_tags=delivery_tags(prod))
    assert decision.target == good, decision.reason


def test_an_older_delivery_promoted_after_a_newer_one_changes_nothing(git_server, tmp_path: Path) -> None:
    from coelho_pipeline.assets.source import _newer_everywhere
    from coelho_pipeline.resources.git import GitRemote
    from coelho_pipeline.resources.target import DeliveryTargetResource

    repo = make_source_repo(git_server)
    older = repo.head()
    newer = repo.push({"README.md": "later\n"}, "Later change")
    remote = GitRemote(url=repo.url, branch="master", cache_dir=tmp_path / "cache")
    remote.fetch()
    files = DeliveryTargetResource(apps=list(APPS), values_path="k3d/helm/values-prod.yaml")

    def values(**tags: str) -> str:
        return "".join(f"{key}:\n  image:\n    repository: r/{key}\n    tag: {tags.get(key, newer)}\n"
                       for key in ("fastapi", "kafkaProducers", "sveltekit"))

    assert "already names newer deliveries for every app" in _newer_everywhere(remote, older, values(), files)
    # One app still older (or not a commit at all): promoting can change it, so it is not skipped.
    assert _newer_everywhere(remote, older, values(sveltekit=older), files) is None
    assert _newer_everywhere(remote, older, values(sveltekit="0.1.0"), files) is None
    assert _newer_everywhere(remote, newer, values(), files) is None  # the same commit: promote (idempotent)
