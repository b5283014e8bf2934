"""k3d/argocd/application.yaml: the Argo CD Application and the pipeline's ServiceAccount and RBAC.

Built-in kinds (Namespace, ServiceAccount, Role, RoleBinding) are validated strictly with
kubernetes-validate for Kubernetes 1.35 (the k3d node image) and the newest version it knows.
The Application is a CRD: it is validated structurally, against the subset of Argo CD's
Application CRD schema (argoproj.io/v1alpha1, as in argo-cd v3.6 manifests/crds) that covers every
field this file uses, with unknown fields refused, so a misspelt key fails here instead of being
pruned silently by the API server. No cluster, no Argo CD.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from coelho_pipeline.chart import argocd_helm_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = REPO_ROOT / "k3d" / "argocd" / "application.yaml"
DOCS = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
SA = ("ServiceAccount", "argocd", "coelho-pipeline")


def objects(kind: str) -> list[dict]:
    return [d for d in DOCS if d["kind"] == kind]


def closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
# The fields of Argo CD's Application CRD (v1alpha1) that application.yaml uses, with the CRD's
# types; required: the CRD's lists plus spec.source (this file uses the single-source form).
# Objects are closed to catch misspelt keys.
APPLICATION_SCHEMA = closed({
    "apiVersion": {"const": "argoproj.io/v1alpha1"},
    "kind": {"const": "Application"},
    "metadata": closed({"name": STRING, "namespace": STRING, "labels": {"type": "object"},
                        "finalizers": STRINGS}, ("name", "namespace")),
    "spec": closed({
        "project": STRING,
        "source": closed({
            "repoURL": STRING,
            "targetRevision": STRING,
            "path": STRING,
            "helm": closed({
                "valueFiles": STRINGS,
                "parameters": {"type": "array", "items": closed(
                    {"name": STRING, "value": STRING, "forceString": {"type": "boolean"}})},
            }),
        }, ("repoURL",)),
        "destination": closed({"server": STRING, "namespace": STRING, "name": STRING}),
        "revisionHistoryLimit": {"type": "integer"},
        "syncPolicy": closed({
            "automated": closed({"prune": {"type": "boolean"}, "selfHeal": {"type": "boolean"},
                                 "allowEmpty": {"type": "boolean"}, "enabled": {"type": "boolean"}}),
            "syncOptions": STRINGS,
            "retry": closed({
                "limit": {"type": "integer"},
                "backoff": closed({"duration": STRING, "factor": {"type": "integer"}, "maxDuration": STRING}),
            }),
        }),
    }, ("destination", "project", "source")),
}, ("apiVersion", "kind", "metadata", "spec"))


def test_the_file_holds_exactly_the_application_and_the_pipelines_identity() -> None:
    assert sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in DOCS) == [
        ("Application", "argocd", "coelho-realtime"),
        ("Namespace", "", "coelho-realtime"),
        ("Role", "argocd", "coelho-pipeline-applications"),
        ("Role", "coelho-realtime", "coelho-pipeline-deployments"),
        ("RoleBinding", "argocd", "coelho-pipeline-applications"),
        ("RoleBinding", "coelho-realtime", "coelho-pipeline-deployments"),
        ("ServiceAccount", "argocd", "coelho-pipeline"),
    ]
    # Namespace first, Application last: `kubectl apply -f` creates them in file order.
    assert DOCS[0]["kind"] == "Namespace" and DOCS[-1]["kind"] == "Application"


@pytest.mark.parametrize("k8s_version", ["1.35.0", kubernetes_validate.latest_version()])
def test_builtin_objects_validate(k8s_version: str) -> None:
    builtin = [d for d in DOCS if d["kind"] != "Application"]
    assert len(builtin) == 6
    for obj in builtin:
        kubernetes_validate.validate(obj, k8s_version, strict=True)


def test_application_validates_structurally() -> None:
    (app,) = objects("Application")
    jsonschema.validate(app, APPLICATION_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # the check does refuse a misspelt key
        jsonschema.validate({**app, "spec": {**app["spec"], "syncPolicy": {"automatic": {}}}}, APPLICATION_SCHEMA)


def test_application_is_the_seeds_plus_what_the_pipeline_needs() -> None:
    (app,) = objects("Application")
    spec = app["spec"]
    assert app["metadata"]["name"] == "coelho-realtime" and app["metadata"]["namespace"] == "argocd"
    assert spec["project"] == "default"
    assert (spec["source"]["path"], spec["source"]["targetRevision"]) == ("k3d/helm", "master")
    assert spec["source"]["helm"] == {"valueFiles": ["values.yaml"],
                                      "parameters": [{"name": "environment", "value": "production"}]}
    assert spec["destination"] == {"server": "https://kubernetes.default.svc", "namespace": "coelho-realtime"}
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
    assert spec["syncPolicy"]["retry"]["limit"] > 0
    # The source points at the chart and its values file as they exist in this repository.
    chart = REPO_ROOT / spec["source"]["path"]
    assert (chart / "Chart.yaml").is_file()
    assert all((chart / f).is_file() for f in spec["source"]["helm"]["valueFiles"])
    assert not spec["source"]["repoURL"].count("@"), "no credentials in the repo URL"


def test_the_applications_parameters_exist_in_the_chart_values() -> None:
    values = yaml.safe_load((REPO_ROOT / "k3d" / "helm" / "values.yaml").read_text())
    overrides = argocd_helm_overrides(MANIFEST.read_text())
    assert overrides == {"environment": "production"}
    assert set(overrides) <= set(values)
    assert values["environment"] == "development"  # the parameter really changes something


def rules_of(role: dict) -> list[tuple[str, str, frozenset[str]]]:
    out = []
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"{role['metadata']['name']}: {sorted(rule)}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.append((group, resource, frozenset(rule["verbs"])))
    return out


def test_pipeline_rbac_is_exactly_applications_deployments_and_pods() -> None:
    assert not objects("ClusterRole") and not objects("ClusterRoleBinding")
    (sa,) = objects("ServiceAccount")
    assert (sa["kind"], sa["metadata"]["namespace"], sa["metadata"]["name"]) == SA
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in objects("Role")}

    granted: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
    for binding in objects("RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA[2], "namespace": SA[1]}]
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io" and ref["kind"] == "Role"
        ns = binding["metadata"]["namespace"]
        granted.setdefault(ns, []).extend(rules_of(roles[(ns, ref["name"])]))

    assert granted == {
        "argocd": [("argoproj.io", "applications", frozenset({"get", "list", "watch", "patch"}))],
        "coelho-realtime": [("apps", "deployments", frozenset({"get", "list", "watch"})),
                            ("", "pods", frozenset({"get", "list"}))],  # restarts, for the rollout verification
    }
    # Every Role is bound (no dormant grants).
    bound = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in objects("RoleBinding")}
    assert bound == set(roles)


def test_namespaces_agree_with_the_chart_and_the_setup_scripts() -> None:
    (app,) = objects("Application")
    (ns,) = objects("Namespace")
    deploy_ns = app["spec"]["destination"]["namespace"]
    assert ns["metadata"]["name"] == deploy_ns
    deployments_role = next(r for r in objects("Role") if r["rules"][0]["resources"] == ["deployments"])
    assert deployments_role["metadata"]["namespace"] == deploy_ns
    lib = (REPO_ROOT / "scripts" / "setup" / "lib.sh").read_text()
    assert f"app_namespace={deploy_ns}\n" in lib
    assert f"argocd_namespace={app['metadata']['namespace']}\n" in lib
