"""Case 9 (kubeconfig): a malformed kubeconfig is a clear, terminal error that names the path.

It is detected at first use (when argocd_sync or live_state makes a client), not at definitions
load: Git-only work keeps running while cluster credentials are broken, and a file rotated later
is still checked. The parser's own messages quote the offending line, which can hold a token:
only line, column and the problem are reported.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from coelho_pipeline.config import Settings
from coelho_pipeline.definitions import build_definitions
from coelho_pipeline.errors import failure
from coelho_pipeline.resources.argocd import ArgoCDError, ArgoCDResource

TOKEN = "kubeconfig-token-that-must-not-leak"

BAD = {
    "not-yaml": f"users: [{{name: u, user: {{token: {TOKEN}}}\nclusters: - [\n",
    "binary": None,  # bytes below
    "a-list": f"- {TOKEN}\n- clusters\n",
    "a-string": f"{TOKEN}\n",
    "no-clusters": f"apiVersion: v1\nkind: Config\nusers: [{{name: u, user: {{token: {TOKEN}}}}}]\n",
    "empty-clusters": "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    "clusters-not-a-list": "apiVersion: v1\nkind: Config\nclusters: {name: c}\n",
    "cluster-without-server": (
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: {}}]\n"
        f"users: [{{name: u, user: {{token: {TOKEN}}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
    ),
    "empty-file": "",
    "unknown-context": (
        "apiVersion: v1\nkind: Config\ncurrent-context: nope\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        f"users: [{{name: u, user: {{token: {TOKEN}}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
    ),
}
EXPECTED = {
    "not-yaml": "is not valid YAML at line",
    "binary": "is not UTF-8 text",
    "a-list": "its document is a list",
    "a-string": "its document is a str",
    "no-clusters": "defines no clusters",
    "empty-clusters": "defines no clusters",
    "clusters-not-a-list": "`clusters` must be a list",
    "cluster-without-server": "cluster c has no `cluster.server` URL",
    "empty-file": "defines no clusters",
    "unknown-context": "cannot load cluster credentials",
}


def write(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"kubeconfig-{case}"
    if case == "binary":
        path.write_bytes(b"\xff\xfe\x00clusters\x00" + TOKEN.encode())
    else:
        path.write_text(BAD[case])
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_kubeconfig_names_the_path_and_nothing_from_inside(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, case)
    with pytest.raises(ArgoCDError) as exc:
        ArgoCDResource(kubeconfig=str(path)).client()
    message = str(exc.value)
    assert str(path) in message and "argocd/coelho-realtime" in message
    assert EXPECTED[case] in message, message
    assert not exc.value.transient and not failure(exc.value).allow_retries
    assert TOKEN not in message and TOKEN not in repr(exc.value.__cause__)


def test_a_missing_file_in_a_kubeconfig_list_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n")
    gone = tmp_path / "gone"
    with pytest.raises(ArgoCDError, match=f"kubeconfig {gone} cannot be read"):
        ArgoCDResource(kubeconfig=f"{good}:{gone}").client()


def test_the_run_fails_at_first_use_naming_the_path(tmp_path: Path) -> None:
    """Definitions load (the code location stays up); the drift run fails once, terminally, with the path."""
    path = write(tmp_path, "not-yaml")
    defs = build_definitions(Settings(git_url=str(tmp_path / "nowhere.git"), apps=("fastapi",),
                                      kubeconfig=str(path), workdir=str(tmp_path / "work")))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("drift_check").execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        (step_failure,) = [e for e in result.all_events if e.is_step_failure]
        message = step_failure.step_failure_data.error.message
        assert str(path) in message and "is not valid YAML" in message
        assert TOKEN not in message
        # Terminal: retrying cannot fix a file, so no retry was scheduled.
        assert not [e for e in result.all_events if e.is_step_up_for_retry]
