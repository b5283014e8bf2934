"""Extra apps for the growth figures: copies of the fixture app, apps/app_NN/, each with its
values.yaml block and a Deployment template, so a catalog of N apps renders N Deployments."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))

from conftest import FIXTURES  # noqa: E402
from pipeline_harness import APPS  # noqa: E402

from coelho_pipeline.catalog import App  # noqa: E402

VALUES = "k3d/helm/values.yaml"


_TEMPLATE = """{{- if .Values.KEY.enabled }}
{{- $ctx := dict "root" $ "component" "COMPONENT" "version" .Values.KEY.image.tag }}
{{- $image := dict "root" $ "key" "KEY" "image" .Values.KEY.image }}
# Benchmark app NAME (benchmarks/bench_daemon.py, growth): a minimal Deployment the render check can see.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "coelho-realtime.componentName" $ctx }}
  labels:
    {{- include "coelho-realtime.componentLabels" $ctx | nindent 4 }}
spec:
  replicas: {{ .Values.KEY.replicas }}
  selector:
    matchLabels:
      {{- include "coelho-realtime.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "coelho-realtime.componentLabels" $ctx | nindent 8 }}
    spec:
      containers:
        - name: COMPONENT
          image: {{ include "coelho-realtime.image" $image | quote }}
{{- end }}
"""


def extra_app_names(total: int) -> list[str]:
    return [f"app_{i:02d}" for i in range(len(APPS) + 1, total + 1)]


def extra_apps_rewrite(names: Sequence[str]) -> Callable[[Path], None]:
    """make_source_repo's hook: apps/<name>/ (the fixture app), a values.yaml block, a Deployment template."""
    def rewrite(work: Path) -> None:
        dockerfile = (FIXTURES / "apps" / "fastapi" / "Dockerfile").read_text()
        values = work / VALUES
        blocks = []
        for name in names:
            app = App(name)
            folder = work / "apps" / name
            folder.mkdir(parents=True)
            (folder / "Dockerfile").write_text(dockerfile)
            (folder / "main.py").write_text(f"print('{name}')\n")
            blocks.append(f"\n# Benchmark app {name} (benchmarks/bench_daemon.py, growth).\n{app.values_key}:\n"
                          f"  enabled: true\n  image:\n    repository: 127.0.0.1:5000/coelho/{app.image}\n"
                          f"    tag: \"\"\n    pullPolicy: IfNotPresent\n  replicas: 1\n  resources: {{}}\n")
            template = work / "k3d" / "helm" / "templates" / "bench-apps" / f"{app.image}.yaml"
            template.parent.mkdir(parents=True, exist_ok=True)
            template.write_text(_TEMPLATE.replace("KEY", app.values_key).replace("COMPONENT", app.component)
                                .replace("NAME", name))
        values.write_text(values.read_text() + "".join(blocks))
    return rewrite


def extra_image_values(names: Sequence[str]) -> dict[str, str]:
    """The Argo CD double's map of values key -> image name for these apps."""
    return {f"{App(n).values_key}.image": f"coelho-realtime-{App(n).component}" for n in names}
