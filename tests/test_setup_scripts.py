"""scripts/setup/: shellcheck, the missing-tool messages, and each step's idempotence; k3d/cluster.yaml.

There is no k3d, cluster, helm binary or Argo CD here, so the scripts never reach a real one:
* shellcheck lints every script (a missing shellcheck fails the test; it is an apt package);
* each script runs with a PATH holding only bash plus stand-ins for the *other* tools it needs,
  and must stop with exit 127 and a message naming the missing tool, before calling anything;
* behaviour tests run the scripts against recording fakes of k3d/kubectl/helm/docker (small bash
  scripts written here) to show what each step does on a first and on a repeated run.
What only a real machine exercises: `k3d cluster create`, the Argo CD install, Secrets in a real
API server (k3d/README.md says the same).

k3d/cluster.yaml is checked against the fields k3d's config schema (k3d.io/v1alpha5) allows,
copied from k3d's pkg/config/v1alpha5/schema.json (k3d-io/k3d at 46f3480d); during development
the file was also validated against that schema with jsonschema.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP = REPO_ROOT / "scripts" / "setup"
BASH = shutil.which("bash") or "/bin/bash"
CONTEXT = "k3d-coelho-realtime"

# What each step needs on PATH (the scripts' require_tools lines must say the same).
REQUIRED_TOOLS = {
    "01-create-cluster.sh": ["docker", "k3d", "kubectl"],
    "02-install-argocd.sh": ["kubectl", "helm"],
    "03-create-secrets.sh": ["kubectl", "od", "tr", "mktemp"],
    "04-apply-application.sh": ["kubectl"],
    "setup-all.sh": ["docker", "k3d", "kubectl", "helm", "od", "tr", "mktemp"],
}
HINTS = {"k3d": "https://k3d.io", "kubectl": "https://kubernetes.io/docs/tasks/tools/", "helm": "https://helm.sh",
         "docker": "https://docs.docker.com", "od": "coreutils", "tr": "coreutils", "mktemp": "coreutils"}


def make_bin(tmp: Path, *, real: list[str] = (), fakes: dict[str, str] | None = None) -> Path:
    """A directory for PATH: bash, symlinks to the ``real`` tools, and bash ``fakes`` (name -> body)."""
    bindir = tmp / "bin"
    bindir.mkdir()
    os.symlink(BASH, bindir / "bash")
    for tool in real:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by this test"
        os.symlink(found, bindir / tool)
    for name, body in (fakes or {}).items():
        path = bindir / name
        path.write_text(f"#!{BASH}\nprintf '%s\\n' \"{name} $*\" >>\"$CALLS\"\n{body}\n")
        path.chmod(0o755)
    return bindir


def run(script: str, bindir: Path, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    calls = tmp / "calls.log"
    calls.touch()
    return subprocess.run(
        [str(SETUP / script)],
        env={"PATH": str(bindir), "HOME": str(tmp), "CALLS": str(calls), "STATE": str(tmp), **env},
        capture_output=True, text=True, timeout=60, cwd=tmp,
    )


def calls(tmp: Path) -> list[str]:
    return (tmp / "calls.log").read_text().splitlines()


# --------------------------------------------------------------------------- lint


def test_every_setup_script_is_known_and_executable() -> None:
    scripts = {p.name for p in SETUP.glob("*.sh")} - {"lib.sh"}
    assert scripts == set(REQUIRED_TOOLS)
    for name, tools in REQUIRED_TOOLS.items():
        text = (SETUP / name).read_text()
        assert os.access(SETUP / name, os.X_OK), name
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert re.search(r"^require_tools (.+)$", text, re.M).group(1).split() == tools, name


def test_shellcheck_passes() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required for this test (apt-get install shellcheck)"
    scripts = sorted(str(p) for p in SETUP.glob("*.sh"))
    result = subprocess.run([shellcheck, "--external-sources", "--severity=style", *scripts],
                            capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- missing tools


@pytest.mark.parametrize(("script", "tool"), [(s, t) for s, tools in REQUIRED_TOOLS.items() for t in tools])
def test_a_missing_tool_stops_the_script_with_a_clear_message(tmp_path: Path, script: str, tool: str) -> None:
    others = {t: "exit 99" for t in REQUIRED_TOOLS[script] if t != tool}
    result = run(script, make_bin(tmp_path, fakes=others), tmp_path)

    assert result.returncode == 127, result.stderr
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith(f"{script}: error: '{tool}' is required")]
    assert f"{script}: error: '{tool}' is required but was not found in PATH" in result.stderr
    assert HINTS[tool] in result.stderr
    assert calls(tmp_path) == [], "nothing may run before the tool check"


def test_every_missing_tool_is_named_at_once(tmp_path: Path) -> None:
    result = run("setup-all.sh", make_bin(tmp_path), tmp_path)
    assert result.returncode == 127
    named = re.findall(r"error: '([a-z0-9]+)' is required", result.stderr)
    assert named == REQUIRED_TOOLS["setup-all.sh"]


# --------------------------------------------------------------------------- what each step does

KUBECTL_OK = "exit 0"
NO_CONTEXT = 'case "$*" in "config get-contexts"*) exit 1;; esac'


def test_create_cluster_creates_once_then_only_starts(tmp_path: Path) -> None:
    k3d = ('case "$1 $2" in\n'
           '  "cluster get") [ -e "$STATE/cluster" ] || exit 1 ;;\n'
           '  "cluster create") : >"$STATE/cluster" ;;\n'
           'esac')
    bindir = make_bin(tmp_path, fakes={"docker": "exit 0", "k3d": k3d, "kubectl": KUBECTL_OK})

    first = run("01-create-cluster.sh", bindir, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"k3d cluster create --config {REPO_ROOT}/k3d/cluster.yaml" in calls(tmp_path)
    assert f"kubectl config use-context {CONTEXT}" in calls(tmp_path)
    assert f"kubectl --context {CONTEXT} wait --for=condition=Ready nodes --all --timeout=180s" in calls(tmp_path)

    (tmp_path / "calls.log").write_text("")
    second = run("01-create-cluster.sh", bindir, tmp_path)
    assert second.returncode == 0, second.stderr
    assert not any(c.startswith("k3d cluster create") for c in calls(tmp_path))
    assert "k3d cluster start coelho-realtime --wait" in calls(tmp_path)
    assert "exists; starting it if it is stopped" in second.stdout


def test_create_cluster_needs_a_running_docker_engine(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, fakes={"docker": "exit 1", "k3d": "exit 0", "kubectl": KUBECTL_OK})
    result = run("01-create-cluster.sh", bindir, tmp_path)
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr
    assert not any(c.startswith("k3d") for c in calls(tmp_path))


def test_install_argocd_is_a_pinned_helm_upgrade_install(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, fakes={"kubectl": KUBECTL_OK, "helm": "exit 0"})
    result = run("02-install-argocd.sh", bindir, tmp_path)
    assert result.returncode == 0, result.stderr
    (helm_call,) = [c for c in calls(tmp_path) if c.startswith("helm ")]
    assert helm_call.startswith("helm upgrade --install argocd argo-cd --repo https://argoproj.github.io/argo-helm "
                                "--version 10.1.1 ")
    assert f"--kube-context {CONTEXT} --namespace argocd --create-namespace" in helm_call
    assert "--wait" in helm_call


SECRETS_KUBECTL = r'''
existing=" ${EXISTING:-} "
case "$*" in
  *"get secret "*)
    for a in "$@"; do last=$a; done
    case $existing in *" $last "*) exit 0;; *) exit 1;; esac ;;
  *"create secret generic "*)
    name=""; take=0
    for a in "$@"; do
      if [ "$take" = 1 ]; then name=$a; take=0; fi
      [ "$a" = generic ] && take=1
      case $a in --from-file=*)
        spec=${a#--from-file=}; value=""
        IFS= read -r value <"${spec#*=}" || true
        printf '%s %s %s %s\n' "$name" "${spec%%=*}" "$value" "${spec#*=}" >>"$STATE/secrets.log" ;;
      esac
    done ;;
esac
exit 0
'''


def test_create_secrets_creates_missing_secrets_and_keeps_existing_ones(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, real=["od", "tr", "mktemp", "mkdir", "chmod", "rm"],
                      fakes={"kubectl": SECRETS_KUBECTL})
    result = run("03-create-secrets.sh", bindir, tmp_path, EXISTING="coelho-realtime-redis")
    assert result.returncode == 0, result.stderr

    created: dict[str, dict[str, str]] = {}
    files = []
    for line in (tmp_path / "secrets.log").read_text().splitlines():
        name, key, value, path = line.split(" ")
        created.setdefault(name, {})[key] = value
        files.append(Path(path))
    assert {name: set(keys) for name, keys in created.items()} == {
        "coelho-realtime-minio": {"root-user", "root-password"},
        "coelho-realtime-postgresql": {"postgres-password", "password"},
        "coelho-realtime-grafana": {"admin-user", "admin-password"},
    }
    assert "secret 'coelho-realtime-redis' exists; kept" in result.stdout
    passwords = [v for keys in created.values() for k, v in keys.items() if "password" in k]
    assert len(passwords) == 4 and len(set(passwords)) == 4
    assert all(re.fullmatch(r"[0-9a-f]{48}", p) for p in passwords)
    # No password on a command line, in the output, or left on disk.
    log = (tmp_path / "calls.log").read_text() + result.stdout + result.stderr
    assert not any(p in log for p in passwords)
    assert files and not any(f.exists() for f in files)


def test_create_secrets_on_a_second_run_changes_nothing(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, real=["od", "tr", "mktemp", "mkdir", "chmod", "rm"],
                      fakes={"kubectl": SECRETS_KUBECTL})
    all_there = " ".join(f"coelho-realtime-{s}" for s in ("minio", "postgresql", "redis", "grafana"))
    result = run("03-create-secrets.sh", bindir, tmp_path, EXISTING=all_there)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "secrets.log").exists()
    assert not any("create" in c for c in calls(tmp_path))
    assert result.stdout.count("exists; kept") == 4


def test_apply_application_applies_the_manifest_and_sets_the_repo_url(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, fakes={"kubectl": KUBECTL_OK})
    result = run("04-apply-application.sh", bindir, tmp_path, COELHO_ARGOCD_REPO_URL="http://git.example:8418/d.git")
    assert result.returncode == 0, result.stderr
    assert f"kubectl --context {CONTEXT} apply -f {REPO_ROOT}/k3d/argocd/application.yaml" in calls(tmp_path)
    assert (f"kubectl --context {CONTEXT} -n argocd patch application coelho-realtime --type merge "
            '-p {"spec":{"source":{"repoURL":"http://git.example:8418/d.git"}}}') in calls(tmp_path)
    assert "kubectl -n argocd create token coelho-pipeline" in result.stdout


def test_apply_application_refuses_a_repo_url_with_credentials(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, fakes={"kubectl": KUBECTL_OK})
    result = run("04-apply-application.sh", bindir, tmp_path, COELHO_ARGOCD_REPO_URL="http://me:pw@git.example/d.git")
    assert result.returncode == 1
    assert "without credentials" in result.stderr and "pw" not in result.stderr.replace("pw@", "")
    assert not any(" patch " in c for c in calls(tmp_path))


def test_apply_application_needs_argo_cd_first(tmp_path: Path) -> None:
    kubectl = 'case "$*" in *"get crd"*) exit 1;; esac'
    result = run("04-apply-application.sh", make_bin(tmp_path, fakes={"kubectl": kubectl}), tmp_path)
    assert result.returncode == 1
    assert "run scripts/setup/02-install-argocd.sh first" in result.stderr
    assert not any(" apply " in c for c in calls(tmp_path))


@pytest.mark.parametrize("script", ["02-install-argocd.sh", "03-create-secrets.sh", "04-apply-application.sh"])
def test_steps_after_the_first_need_the_clusters_context(tmp_path: Path, script: str) -> None:
    bindir = make_bin(tmp_path, real=["od", "tr", "mktemp"], fakes={"kubectl": NO_CONTEXT, "helm": "exit 0"})
    result = run(script, bindir, tmp_path)
    assert result.returncode == 1
    assert (f"kube context '{CONTEXT}' not found; run scripts/setup/01-create-cluster.sh first"
            in result.stderr)
    assert not any(c.startswith("helm") for c in calls(tmp_path))


def test_scripts_run_from_their_own_directory(tmp_path: Path) -> None:
    bindir = make_bin(tmp_path, fakes={"kubectl": KUBECTL_OK})
    result = subprocess.run([BASH, "04-apply-application.sh"], cwd=SETUP, capture_output=True, text=True,
                            env={"PATH": str(bindir), "CALLS": str(tmp_path / "calls.log")}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"kubectl --context {CONTEXT} apply -f {REPO_ROOT}/k3d/argocd/application.yaml" in calls(tmp_path)


# --------------------------------------------------------------------------- k3d/cluster.yaml

# Keys k3d.io/v1alpha5 allows (additionalProperties: false), from k3d's schema.json.
K3D_V1ALPHA5 = {
    "": {"apiVersion", "kind", "metadata", "servers", "agents", "kubeAPI", "image", "network", "subnet", "token",
         "volumes", "ports", "files", "options", "env", "registries", "hostAliases"},
    "ports[]": {"port", "nodeFilters"},
    "registries": {"create", "use", "config"},
    "registries.create": {"name", "host", "hostPort", "image", "proxy", "volumes", "enforcePortMatch"},
    "options": {"k3d", "k3s", "kubeconfig", "runtime"},
    "options.k3d": {"wait", "timeout", "disableLoadbalancer", "disableImageVolume", "disableRollback",
                    "loadbalancer"},
    "options.k3s": {"extraArgs", "nodeLabels"},
    "options.k3s.extraArgs[]": {"arg", "nodeFilters"},
    "options.kubeconfig": {"updateDefaultKubeconfig", "switchCurrentContext"},
}


def test_k3d_config_fits_its_schema_version_and_the_chart() -> None:
    config = yaml.safe_load((REPO_ROOT / "k3d" / "cluster.yaml").read_text())
    parts = {"": config, "registries": config["registries"], "registries.create": config["registries"]["create"],
             "options": config["options"], "options.k3d": config["options"]["k3d"],
             "options.k3s": config["options"]["k3s"], "options.kubeconfig": config["options"]["kubeconfig"]}
    parts.update({f"ports[]#{i}": p for i, p in enumerate(config["ports"])})
    parts.update({f"options.k3s.extraArgs[]#{i}": a for i, a in enumerate(config["options"]["k3s"]["extraArgs"])})
    for where, obj in parts.items():
        unknown = set(obj) - K3D_V1ALPHA5[where.split("#")[0]]
        assert not unknown, f"{where}: {sorted(unknown)} not in k3d.io/v1alpha5"
    assert (config["apiVersion"], config["kind"]) == ("k3d.io/v1alpha5", "Simple")
    assert isinstance(config["servers"], int) and config["servers"] >= 1
    assert re.fullmatch(r"rancher/k3s:v1\.35\.\d+-k3s\d+", config["image"])  # the version the tests validate for
    assert all(isinstance(p["port"], str) for p in config["ports"])
    assert isinstance(config["registries"]["create"]["hostPort"], str)

    # One name per thing across the config, the setup scripts and the chart.
    lib = (SETUP / "lib.sh").read_text()
    assert f"cluster_name={config['metadata']['name']}\n" in lib
    create = config["registries"]["create"]
    assert (create["host"], create["hostPort"]) == ("127.0.0.1", "5000")
    mirrors = yaml.safe_load(config["registries"]["config"])["mirrors"]
    assert mirrors == {"127.0.0.1:5000": {"endpoint": [f"http://{create['name']}:5000"]}}
    values = yaml.safe_load((REPO_ROOT / "k3d" / "helm" / "values.yaml").read_text())
    for app in ("fastapi", "kafkaProducers", "sveltekit"):
        assert values[app]["image"]["repository"].startswith("127.0.0.1:5000/")
    published = {p["port"].rsplit(":", 1)[-1] for p in config["ports"] if p["nodeFilters"] == ["loadbalancer"]}
    load_balanced = {str(values[app]["service"]["port"]) for app in ("fastapi", "sveltekit")
                     if values[app]["service"]["type"] == "LoadBalancer"}
    assert published == load_balanced == {"3000", "8000"}
    assert all(p["port"].startswith("127.0.0.1:") for p in config["ports"]), "loopback only"
