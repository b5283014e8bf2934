"""Which apps the pipeline delivers: build context, image name, values key path, Deployment component."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class App:
    """One deliverable app, found at ``apps/<name>/Dockerfile``."""

    name: str  # directory under apps/, e.g. "kafka_producers"
    # Overrides from a targets file (coelho_pipeline.targets); empty means the convention below.
    build_context: str = ""
    values_key_path: str = ""  # may be dotted, e.g. "coelho.fastapi"

    @property
    def context(self) -> str:
        """Build context, relative to the repository root."""
        return self.build_context or f"apps/{self.name}"

    @property
    def image(self) -> str:
        """Image name under the registry prefix; hyphens are the registry convention."""
        return self.name.replace("_", "-")

    @property
    def values_key(self) -> str:
        """Key path of the app's block in values.yaml: top-level, Helm's camelCase, unless overridden."""
        if self.values_key_path:
            return self.values_key_path
        head, *rest = self.name.replace("-", "_").split("_")
        return head + "".join(part.title() for part in rest)

    @property
    def tag_path(self) -> str:
        return f"{self.values_key}.image.tag"

    @property
    def repository_path(self) -> str:
        return f"{self.values_key}.image.repository"

    @property
    def component(self) -> str:
        """Value of the Deployment's app.kubernetes.io/component label."""
        return self.image

    @property
    def asset_name(self) -> str:
        return self.name


def discover_apps(repo_root: Path) -> tuple[App, ...]:
    """Every ``apps/<name>/Dockerfile`` under ``repo_root``, sorted by name."""
    return tuple(App(p.parent.name) for p in sorted((repo_root / "apps").glob("*/Dockerfile")))


def apps_from_names(names: Iterable[str]) -> tuple[App, ...]:
    return tuple(App(n) for n in names)
