"""What must hold before a values.yaml is pushed: its images exist, and the chart renders with them."""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from coelho_pipeline.chart import ChartRenderError, argocd_helm_overrides, render_chart, verify_images
from coelho_pipeline.errors import PipelineError
from coelho_pipeline.resources.git import GitError, GitRemote
from coelho_pipeline.resources.images import ImageError, Registry
from coelho_pipeline.resources.target import DeliveryTargetResource
from coelho_pipeline.values import ValuesError, read_scalar


class VerificationFailed(PipelineError):
    """The values about to be pushed name a missing image or do not render; nothing is pushed."""


@dataclass(frozen=True)
class Verification:
    missing_images: tuple[str, ...]
    render_problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing_images and not self.render_problems

    def raise_if_failed(self, *, where: str) -> None:
        if not self.ok:
            raise VerificationFailed(f"{where}; nothing committed:\n" + "\n".join(
                f"- {p}" for p in (*self.missing_images, *self.render_problems)))


def verify(remote: GitRemote, tip: str, values_text: str, target: DeliveryTargetResource,
           registry: Registry, *, apps: Collection[str]) -> Verification:
    """Both checks on ``values_text`` as it would be committed on ``tip``: the images of ``apps``
    (the ones this delivery changes) exist, and the chart renders with the whole file.

    A registry that cannot be asked is raised (transient), not reported as a missing image.
    """
    return Verification(tuple(missing_images(values_text, target, registry, apps=apps)),
                        tuple(render_problems(remote, tip, values_text, target, registry)))


def missing_images(values_text: str, target: DeliveryTargetResource, registry: Registry, *,
                   apps: Collection[str]) -> list[str]:
    """The ``repository:tag`` of each of ``apps`` in ``values_text`` that the registry does not hold.

    Other apps' images are not this delivery's to vouch for: a tag someone else pinned meanwhile
    is left as it is, and the render check still sees the whole file.
    """
    missing = []
    for app in target.catalog():
        if app.name not in apps:
            continue
        try:
            repository = read_scalar(values_text, app.repository_path, source=target.values_path)
            tag = read_scalar(values_text, app.tag_path, source=target.values_path)
        except ValuesError as e:
            missing.append(str(e))
            continue
        ref = f"{repository}:{tag}"
        if repository != registry.repository(app.image):
            missing.append(f"{app.repository_path}: {repository} is not where COELHO_REGISTRY pushes "
                           f"({registry.repository(app.image)})")
        elif not tag:
            missing.append(f"{app.tag_path}: empty, no image delivered")
        else:
            try:
                if registry.digest(repository, tag) is None:
                    missing.append(f"{app.tag_path}: {ref} does not exist in the registry")
            except ImageError as e:
                if e.transient:
                    raise
                missing.append(f"{app.tag_path}: {e}")
    return missing


def render_problems(remote: GitRemote, tip: str, values_text: str, target: DeliveryTargetResource,
                    registry: Registry) -> list[str]:
    """Renders the chart at ``tip`` with ``values_text`` the way the Argo CD Application will, and
    checks that each app Deployment runs ``<registry>/<image>:<its tag in values_text>``."""
    try:
        expected = {app.component: f"{registry.repository(app.image)}:"
                                   f"{read_scalar(values_text, app.tag_path, source=target.values_path)}"
                    for app in target.catalog()}
    except ValuesError as e:
        return [str(e)]
    try:
        application = remote.read_file(tip, target.application_path)
        overrides = argocd_helm_overrides(application) if application else {}
    except ValueError as e:  # the Application manifest does not parse
        return [f"{target.application_path}: {e}"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            chart_dir = Path(tmp) / "chart"
            with tarfile.open(fileobj=io.BytesIO(remote.archive(tip, target.chart_path))) as tar:
                problem = extract_chart(tar, chart_dir, target.chart_path)
                if problem:
                    return [problem]
            objects = render_chart(chart_dir, values_text, release=target.release_name,
                                   namespace=target.deploy_namespace, overrides=overrides)
    except ChartRenderError as e:
        return [f"the chart at {target.chart_path} does not render: {e}"]
    except GitError as e:
        if e.transient:
            raise
        return [str(e)]
    return verify_images(objects, expected)


def extract_chart(tar: tarfile.TarFile, dest: Path, chart_path: str) -> str | None:
    """Extracts a git archive of the chart; a link or path that leaves ``dest`` is a problem, returned."""
    root = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for member in tar.getmembers():
        where = (dest / member.name).resolve()
        if member.islnk():  # git archive writes none; a hard link's target would be the archive's business
            return f"{chart_path}/{member.name}: a hard link in the chart archive; refused"
        if member.issym():
            link = Path(member.linkname)
            pointed = (where.parent / link).resolve() if not link.is_absolute() else link
            if not pointed.is_relative_to(root):
                return (f"{chart_path}/{member.name} is a link to {member.linkname}, outside the chart "
                        "directory; refused (Helm would read a file the chart does not contain)")
        elif not (member.isfile() or member.isdir()):
            return f"{chart_path}/{member.name}: unexpected entry type in the chart archive"
        if not where.is_relative_to(root):
            return f"{chart_path}/{member.name} leaves the chart directory; refused"
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:  # Python before 3.11.4 (Debian 12 ships 3.11.2): checked above by hand
        tar.extractall(dest)
    return None
