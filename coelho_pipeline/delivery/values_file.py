"""Reading values.yaml from Git for a delivery: bounded in size, decoded strictly, errors that name it."""

from __future__ import annotations

from coelho_pipeline.errors import PipelineError
from coelho_pipeline.resources.git import GitRemote

# The largest real chart values in the corpus is ~180 KB; a file far beyond that is a mistake
# (a generated dump, a binary) and would make every parse of a delivery slow.
VALUES_MAX_BYTES = 2 * 1024 * 1024


class ValuesFileError(PipelineError):
    """values.yaml does not exist at a commit; terminal (too large or not UTF-8 is a GitError of read_file)."""


def read_values(remote: GitRemote, sha: str, path: str, *, max_bytes: int = VALUES_MAX_BYTES) -> str:
    """The text of the values file at ``sha``; raises ValuesFileError naming the file and commit."""
    text = remote.read_file(sha, path, max_bytes=max_bytes)  # refuses a larger blob by its size alone
    if text is None:
        raise ValuesFileError(f"{path} does not exist at commit {sha} on {remote.branch}")
    return text
