"""Render the umbrella chart with Helm's own engine: the blocking check before a manifest commit.

The pipeline edits ``k3d/helm/values.yaml`` and, before committing, renders the chart with the
edited text exactly the way the Argo CD Application will (``valueFiles: [values.yaml]`` plus its
Helm parameters, e.g. ``environment=production``), then checks that every app Deployment runs the
image just built. A chart that does not render raises :class:`ChartRenderError` carrying Helm's
own message; nothing is committed.

The engine is helm-python-sdk (module ``helm_python``, Helm's Go SDK through a C ABI; no helm
binary, no cluster). What was found probing helm-python-sdk 0.2.2 (Helm SDK v4):

* ``Chart.render(values, name=, namespace=)`` renders offline. The values given are *user* values,
  coalesced over the chart's own ``values.yaml`` (like ``helm template -f``). To render the edited
  text and never the chart directory's ``values.yaml``, :func:`render_chart` renders a temporary
  copy of the chart whose ``values.yaml`` *is* the edited text, and also passes that text (plus the
  overrides) as user values, as Argo CD does. ``lookup`` returns nothing; ``.Capabilities`` is a
  fixed default (Kubernetes v1.36, built-in API groups only), so the chart's templates do not
  depend on it.
* **Missing dependencies.** The pipeline renders a Git checkout, where ``charts/`` is gitignored.
  ``Chart.load`` accepts a chart whose ``Chart.yaml`` declares dependencies that are absent from
  ``charts/``, and ``render`` then renders the parent's own templates plus whatever subcharts *are*
  present; the absent ones are skipped without an error (the ``helm template`` CLI would instead
  refuse with "found in Chart.yaml, but missing in charts/ directory"). Conditions
  (``<dep>.enabled``) still apply to the subcharts that are present. ``lint`` reports the absent
  ones as a warning ("chart directory is missing these dependencies: ..."). So the check covers
  exactly our own templates and values; subcharts are Argo CD's business (it runs
  ``helm dependency build`` itself). :func:`missing_dependencies` lists the skipped ones and
  :func:`render_chart` logs them.
* Errors arrive as ``HelmRenderError`` (template parse/execution, including the chart's own
  ``fail`` calls: ``execution error at (coelho-realtime/templates/x.yaml:12:3): <message>``),
  ``HelmValuesError`` (values YAML that does not parse, or violates ``values.schema.json``:
  ``- at '/fastapi/image/tag': got number, want string``) and ``HelmChartLoadError``. All become
  :class:`ChartRenderError` with the chart path and Helm's text.
* The result maps template paths to text and includes ``NOTES.txt``; ``helm template`` leaves
  that out, and so does :func:`render_chart`.

One render_chart call of k3d/helm takes about 45 ms here (2 cores): 9 ms in Helm's render, 7 ms
parsing the output, the rest the temporary copy, the dependency listing and the values parsing.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

# PyYAML (a dependency of the kubernetes client) reads rendered manifests with YAML 1.1 rules, as
# Kubernetes' own sigs.k8s.io/yaml does; its C loader is ten times faster than a pure-Python one.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

log = logging.getLogger(__name__)

COMPONENT_LABEL = "app.kubernetes.io/component"

__all__ = [
    "COMPONENT_LABEL",
    "ChartRenderError",
    "argocd_helm_overrides",
    "deployment_images",
    "missing_dependencies",
    "render_chart",
    "verify_images",
]


class ChartRenderError(Exception):
    """The chart does not render; the message names the chart path and carries Helm's own text."""

    def __init__(self, chart_dir: Path | str, helm_message: str) -> None:
        self.chart_dir = str(chart_dir)
        self.helm_message = helm_message.strip()
        super().__init__(f"chart {self.chart_dir} does not render: {self.helm_message}")


def render_chart(
    chart_dir: Path,
    values_yaml: str,
    *,
    release: str = "coelho-realtime",
    namespace: str = "coelho-realtime",
    overrides: Mapping[str, Any] | None = None,
) -> list[dict]:
    """Render ``chart_dir`` with ``values_yaml`` as its values file; return the rendered objects.

    Args:
        chart_dir: the chart directory (``Chart.yaml``, ``templates/``, optionally ``charts/``).
        values_yaml: the text of the values file to render with. It replaces the chart
            directory's own ``values.yaml``, which is never read.
        release: Helm release name (``.Release.Name``).
        namespace: release namespace (``.Release.Namespace``).
        overrides: nested values applied on top, like ``--set`` (later wins); e.g. the Argo CD
            Application's parameters from :func:`argocd_helm_overrides`. Keys are not split on
            dots: pass ``{"fastapi": {"image": {"tag": ...}}}``.

    Returns:
        Every rendered Kubernetes object (parsed YAML documents, empty ones dropped), in template
        path order. ``NOTES.txt`` is not included.

    Raises:
        ChartRenderError: Helm could not load or render the chart, the values did not parse or
            did not meet ``values.schema.json``, or a template rendered invalid YAML.
    """
    chart_dir = Path(chart_dir)
    if not (chart_dir / "Chart.yaml").is_file():
        raise ChartRenderError(chart_dir, "no Chart.yaml in this directory")
    try:
        values = helm.values_from_yaml(values_yaml) if values_yaml.strip() else {}
    except helm.HelmError as e:
        raise ChartRenderError(chart_dir, f"values.yaml does not parse: {e}") from e
    if overrides:
        values = _merge(values, overrides)

    missing = missing_dependencies(chart_dir)
    if missing:
        log.info("chart %s: dependencies absent from charts/ are not rendered: %s", chart_dir, ", ".join(missing))

    with tempfile.TemporaryDirectory(prefix="coelho-chart-") as tmp:
        copy_dir = Path(tmp) / "chart"
        shutil.copytree(chart_dir, copy_dir, symlinks=False)
        (copy_dir / "values.yaml").write_text(values_yaml, encoding="utf-8")
        try:
            with helm.Chart.load(copy_dir) as chart:
                manifests = chart.render(values, name=release, namespace=namespace)
        except helm.HelmError as e:
            raise ChartRenderError(chart_dir, str(e).replace(str(copy_dir), str(chart_dir))) from e

    return list(_parse_manifests(chart_dir, manifests))


def missing_dependencies(chart_dir: Path) -> list[str]:
    """Names of the dependencies ``Chart.yaml`` declares that are not in ``charts/``."""
    try:
        deps = helm.dependency_list(Path(chart_dir))
    except helm.HelmError as e:
        raise ChartRenderError(chart_dir, str(e)) from e
    return [d["name"] for d in deps if d.get("status") == "missing"]


def deployment_images(
    objects: Sequence[dict], *, component_label: str = COMPONENT_LABEL
) -> dict[str, tuple[str, ...]]:
    """Component -> container images of the Deployment(s) carrying that component label.

    Only ``spec.template.spec.containers`` count (not init containers), in manifest order.
    Deployments without the label are left out.
    """
    images: dict[str, tuple[str, ...]] = {}
    for component, _name, containers in _deployments(objects, component_label):
        images[component] = images.get(component, ()) + tuple(str(c.get("image", "")) for c in containers)
    return images


def verify_images(
    objects: Sequence[dict], expected: Mapping[str, str], *, component_label: str = COMPONENT_LABEL
) -> list[str]:
    """Check that each expected component's Deployment(s) run exactly the expected image.

    Args:
        objects: rendered objects, as :func:`render_chart` returns them.
        expected: component label value -> full image reference, e.g.
            ``{"fastapi": "127.0.0.1:5000/coelho/fastapi:<sha>"}``.

    Returns:
        Human-readable problems (a component without a Deployment, a container running another
        image); an empty list when everything matches.
    """
    found: dict[str, list[tuple[str, list[dict]]]] = {}
    for component, name, containers in _deployments(objects, component_label):
        found.setdefault(component, []).append((name, containers))
    problems = []
    for component, image in expected.items():
        if component not in found:
            problems.append(
                f"no Deployment labelled {component_label}={component} in the rendered chart "
                f"(expected one running {image}; is the app disabled?)"
            )
            continue
        for name, containers in found[component]:
            if not containers:
                problems.append(f"Deployment {name} ({component}) has no containers; expected {image}")
            for c in containers:
                if c.get("image") != image:
                    problems.append(
                        f"Deployment {name} ({component}) container {c.get('name', '?')} runs "
                        f"{c.get('image')!r}, expected {image!r}"
                    )
    return problems


def argocd_helm_overrides(application_yaml: str) -> dict[str, Any]:
    """Values the Argo CD Application adds on top of its value files (``spec.source.helm.parameters``).

    Each parameter is parsed the way Argo CD hands it to Helm: ``--set name=value`` (commas in the
    value escaped), or ``--set-string`` when ``forceString`` is true; Helm's own parser builds the
    nested values. ``application_yaml`` is the text of ``k3d/argocd/application.yaml`` (other
    documents in it are ignored).
    """
    overrides: dict[str, Any] = {}
    try:
        docs = list(yaml.load_all(application_yaml, Loader=_Loader))
    except yaml.YAMLError as e:
        raise ValueError(f"Application manifest does not parse: {e}") from e
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Application":
            continue
        helm_source = ((doc.get("spec") or {}).get("source") or {}).get("helm") or {}
        for param in helm_source.get("parameters") or []:
            name, value = str(param["name"]), str(param.get("value", ""))
            if param.get("forceString"):
                parsed = helm.parse_set_string_values(f"{name}={_escape_set_value(value)}")
            else:
                parsed = helm.parse_set_string(f"{name}={_escape_set_value(value)}")
            overrides = _merge(overrides, parsed)
    return overrides


def _escape_set_value(value: str) -> str:
    # Argo CD escapes commas (a list "{a,b}" is passed as is) so one parameter stays one value.
    if value.startswith("{") and value.endswith("}"):
        return value
    out, prev = [], ""
    for ch in value:
        out.append("\\," if ch == "," and prev != "\\" else ch)
        prev = ch
    return "".join(out)


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``top`` replaces ``base``."""
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_manifests(chart_dir: Path, manifests: Mapping[str, str]) -> Iterator[dict]:
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        try:
            docs = list(yaml.load_all(manifests[path], Loader=_Loader))
        except yaml.YAMLError as e:
            raise ChartRenderError(chart_dir, f"{path} rendered invalid YAML: {e}") from e
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ChartRenderError(chart_dir, f"{path} rendered a document that is not an object: {doc!r}")
            yield doc


def _deployments(objects: Sequence[dict], component_label: str) -> Iterator[tuple[str, str, list[dict]]]:
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        meta = obj.get("metadata") or {}
        component = (meta.get("labels") or {}).get(component_label)
        if component is None:
            continue
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        yield str(component), str(meta.get("name", "?")), list(pod.get("containers") or [])
