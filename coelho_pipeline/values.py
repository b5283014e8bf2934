"""Write image tags into Helm values files without disturbing anything else.

The pure core of the "update manifests" step: text in, text out, no I/O.
Re-dumping a YAML document (even with ruamel's round-trip mode) is how
image updaters end up moving comments, adding blank lines or re-quoting
values. Here ruamel.yaml only
*locates* the scalar: the round-trip composer gives every node its exact
start and end offsets in the input string, and the new text is spliced in at
exactly that span. Every byte outside the span is copied from the input.

Why the composer and not the ``.lc`` info of loaded ``CommentedMap``s:
``.lc`` only records where a value starts. The composer's nodes also carry
the end offset, the quoting style and the anchor, and an alias shows up as a
second reference to a node that sits earlier in the text, which is how
aliases are detected below. It is also a little cheaper than a full load
because no Python objects are constructed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

__all__ = [
    "RepositoryWrite",
    "TagChange",
    "TagKind",
    "TagWrite",
    "ValuesError",
    "aliases_of",
    "read_scalar",
    "read_tag",
    "set_tags",
]

TagKind = Literal["tag", "image-string"]

# Docker's tag grammar (distribution/reference): 1-128 chars, no leading "." or "-".
_DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# An image repository: an optional registry host[:port], then lower-case path components.
_REPOSITORY = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)

# One dotted path segment: a key, then any number of [N] list indexes.
_PATH_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")
_PATH_INDEX = re.compile(r"\[([0-9]+)\]")

# Node properties (anchor "&a", tag "!!str") written before a scalar's content;
# the composer's start mark points at the first property, not at the content.
_PROPERTY = re.compile(r"(?:&[^\s,\[\]{}]+|![^\s,\[\]{}]*)")
_SPACES = re.compile(r"[ \t]*")
_LINE_BREAK = re.compile(r"\r\n?|\n")

# A plain scalar is only kept plain when it is made of these characters: they
# cannot start an indicator or a comment, so the text scans as one plain scalar
# in block and flow context alike.
_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./:@+-]*")

# Helm parses values with go-yaml v2 (YAML 1.1), which has more non-string
# plain scalars than ruamel's resolvers know about: "y"/"n" are booleans, and a
# scalar led by a digit, sign or "." that Go's strconv accepts (after dropping
# "_") is a number. Over-matching here only costs a pair of quotes;
# under-matching would turn a tag into a number in the rendered manifest.
# (ruamel's 1.1 resolver knows the same booleans today; the set pins Helm's list.)
_GO_YAML_BOOL_NULL = frozenset(
    "y Y yes Yes YES n N no No NO true True TRUE false False FALSE "
    "on On ON off Off OFF ~ null Null NULL".split()
)
_GO_NUMBER = re.compile(
    r"""[-+]?(?:
        0[xX][0-9a-fA-F]*(?:\.[0-9a-fA-F]*)?(?:[pP][-+]?[0-9]+)?
      | 0[oO]?[0-7]+
      | 0[bB][01]+
      | (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
    )
    | [-+](?:inf(?:inity)?|nan)  # strconv words, reached only after a sign
    """,
    re.VERBOSE | re.IGNORECASE,
)
_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"

_Style = Literal["plain", "single-quoted", "double-quoted", "empty"]
_STYLES: dict[str | None, _Style] = {None: "plain", "'": "single-quoted", '"': "double-quoted"}


@dataclass(frozen=True)
class TagWrite:
    """One requested write of an image tag into a values file.

    ``path`` joins keys with "." and writes list items as ``[N]`` (0-based),
    e.g. ``spark.master.initContainers[0].image``. With ``kind="image-string"``
    the scalar is a whole ``name:tag`` reference and only its tag is replaced
    (or appended when the reference has none).
    """

    path: str
    tag: str
    kind: TagKind = "tag"


@dataclass(frozen=True)
class RepositoryWrite:
    """One requested write of an image repository (``host[:port]/path``), e.g. at
    ``fastapi.image.repository``, so the file names the registry the image was pushed to."""

    path: str
    repository: str


@dataclass(frozen=True)
class TagChange:
    """One change that ``set_tags`` performed (for commit messages and metadata)."""

    path: str
    old: str | None  # scalar text before the write; None for an empty or null value
    new: str  # scalar value after the write
    line: int  # 1-based line of the scalar


class ValuesError(ValueError):
    """A values file cannot be read or written as requested.

    The message always names the file label and the key path, and the 1-based
    line when one is known: ``values.yaml:27: kafka.image.tag: <reason>``.
    """

    def __init__(self, reason: str, *, source: str, path: str, line: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.path = path
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {path}: {reason}")

    def __reduce__(self) -> tuple[object, tuple[()]]:
        # Keyword-only arguments break the default exception pickling, which
        # Dagster's multiprocess executor may need.
        rebuild = functools.partial(
            type(self), self.reason, source=self.source, path=self.path, line=self.line
        )
        return rebuild, ()


@dataclass(frozen=True)
class _Scalar:
    """Where a target scalar's text sits in the input and what it holds."""

    start: int  # offset of the scalar's text (after any anchor/tag properties)
    end: int  # offset just past it; equal to start for an empty value
    line: int  # 1-based
    style: _Style
    value: str | None  # None when the scalar resolves to null
    is_string: bool  # False when it loads as a number, bool, timestamp, ...
    in_flow: bool  # inside a flow collection ({...} or [...])


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    change: TagChange


def read_scalar(text: str, path: str, *, source: str = "values.yaml") -> str | None:
    """Return the scalar at ``path`` as text, or None if it is empty or null.

    Non-string plain scalars come back as written (``1.10`` -> ``"1.10"``).
    Raises ValuesError when the path does not lead to a single-line scalar.
    """
    return _read(text, path, source).value


def read_tag(
    text: str, path: str, kind: TagKind = "tag", *, source: str = "values.yaml"
) -> str | None:
    """Return the image tag at ``path``: the whole scalar, or for
    ``kind="image-string"`` the part after the reference's last ":".

    None when the value is empty/null or the reference has no tag. A
    digest-pinned reference (``name@sha256:...``) raises ValuesError, since its
    tag does not say what runs.
    """
    scalar = _read(text, path, source)
    if kind not in ("tag", "image-string"):
        raise ValuesError(f"unknown kind {kind!r}", source=source, path=path, line=scalar.line)
    if kind == "tag" or not scalar.value:
        return scalar.value
    _, tag = _split_image_ref(scalar.value, path=path, source=source, line=scalar.line)
    return tag


def set_tags(
    text: str, writes: Sequence[TagWrite | RepositoryWrite], *, source: str = "values.yaml"
) -> tuple[str, list[TagChange]]:
    """Apply ``writes`` to ``text`` and return the new text and the changes made.

    Only the target scalars' text changes; every other byte (comments, blank
    lines, quoting, anchors, line endings, final newline) is copied. Writes
    whose value is already in place are skipped; with nothing to change the
    input string itself is returned. Changes are listed in the order of
    ``writes`` (a repeated identical write counts once). All writes are
    validated before any is applied, so a ValuesError means no output at all.
    """
    if not writes:
        return text, []
    parsed = [(write, _parse_path(write.path, source)) for write in writes]
    root = _compose(text, source, ", ".join(w.path for w in writes))

    # Plan every edit before touching the text, so any error leaves no output.
    edits: dict[int, _Edit] = {}  # keyed by offset: two writes must not hit one scalar
    for write, steps in parsed:
        scalar = _locate(text, root, write.path, steps, source)
        _check_tag(write, source, scalar.line)
        new_value = _new_value(scalar, write, source)
        edit = _plan_edit(scalar, write.path, new_value, source)
        if edit is None:
            continue
        other = edits.get(edit.start)
        if other is not None and other.change.new != edit.change.new:
            raise ValuesError(
                f"conflicting writes to the same scalar: {other.change.new!r} "
                f"(via {other.change.path}) and {edit.change.new!r}",
                source=source,
                path=write.path,
                line=scalar.line,
            )
        edits.setdefault(edit.start, edit)

    if not edits:
        return text, []
    # Splice back to front so the offsets of earlier edits stay valid.
    pieces: list[str] = []
    cursor = len(text)
    for edit in sorted(edits.values(), key=lambda e: e.start, reverse=True):
        pieces.append(text[edit.end : cursor])
        pieces.append(edit.text)
        cursor = edit.start
    pieces.append(text[:cursor])
    return "".join(reversed(pieces)), [edit.change for edit in edits.values()]


def aliases_of(text: str, path: str, *, source: str = "values.yaml") -> list[str]:
    """Key paths that alias the scalar at ``path`` or one of the mappings it sits in.

    Writing such a scalar also changes every one of those keys; callers that must not change
    keys silently refuse the write or report them. An empty list means the write stays local.
    """
    steps = _parse_path(path, source)
    root = _compose(text, source, path)
    _locate(text, root, path, steps, source)  # same errors as a read: missing key, not a scalar
    chain: list[Node] = [root] if root is not None else []
    node = root
    for step in steps:
        if isinstance(step, str):
            node = next(v for k, v in node.value if isinstance(k, ScalarNode) and k.value == step)
        else:
            node = node.value[step]
        chain.append(node)
    anchored = {id(n) for n in chain if getattr(n, "anchor", None)}
    if not anchored:
        return []
    found: list[str] = []
    seen: set[int] = set()

    def walk(current: Node, where: str) -> None:
        if id(current) in seen:  # a second visit is an alias (the anchor comes first in the text)
            if id(current) in anchored:
                found.append(where or "(document root)")
            return
        seen.add(id(current))
        if isinstance(current, MappingNode):
            for key, value in current.value:
                label = key.value if isinstance(key, ScalarNode) else "?"
                walk(value, f"{where}.{label}" if where else label)
        elif isinstance(current, SequenceNode):
            for index, item in enumerate(current.value):
                walk(item, f"{where}[{index}]")

    if root is not None:
        walk(root, "")
    return found


def _parse_path(path: str, source: str) -> list[str | int]:
    """Split ``a.b[0].c`` into ``["a", "b", 0, "c"]``."""
    steps: list[str | int] = []
    for segment in path.split("."):
        match = _PATH_SEGMENT.fullmatch(segment)
        if match is None:
            raise ValuesError(
                'malformed key path (keys joined with ".", list items as [N])',
                source=source,
                path=path,
            )
        steps.append(match.group(1))
        steps.extend(int(i) for i in _PATH_INDEX.findall(match.group(2)))
    return steps


def _check_tag(write: TagWrite | RepositoryWrite, source: str, line: int) -> None:
    if isinstance(write, RepositoryWrite):
        if not _REPOSITORY.fullmatch(write.repository):
            raise ValuesError(
                f"{write.repository!r} is not an image repository (host[:port]/lower-case/path)",
                source=source,
                path=write.path,
                line=line,
            )
        return
    if write.kind not in ("tag", "image-string"):
        raise ValuesError(
            f"unknown kind {write.kind!r}", source=source, path=write.path, line=line
        )
    if not _DOCKER_TAG.fullmatch(write.tag):
        raise ValuesError(
            f"{write.tag!r} is not a valid Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})",
            source=source,
            path=write.path,
            line=line,
        )


def _read(text: str, path: str, source: str) -> _Scalar:
    steps = _parse_path(path, source)
    return _locate(text, _compose(text, source, path), path, steps, source)


@functools.lru_cache(maxsize=8)
def _compose_cached(text: str) -> Node | None:
    # One delivery reads the same file a dozen times (plans, checks, the edit); composing costs
    # about as much as a full load, so the read-only node tree is kept per text.
    # A fresh YAML per call: ruamel's YAML objects are not thread-safe.
    return YAML(typ="rt").compose(text)


def _compose(text: str, source: str, path: str) -> Node | None:
    """Parse ``text`` into a node tree with offsets; YAML errors become ValuesError."""
    try:
        return _compose_cached(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(p for p in (e.context, e.problem) if p) or type(e).__name__
        if mark is None:
            raise ValuesError(f"invalid YAML: {problem}", source=source, path=path) from e
        raise ValuesError(
            f"invalid YAML (column {mark.column + 1}): {problem}",
            source=source,
            path=path,
            line=mark.line + 1,
        ) from e
    except YAMLError as e:  # e.g. ReaderError for a non-printable character
        raise ValuesError(f"invalid YAML: {e}", source=source, path=path) from e


def _node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a scalar"


def _tag_of(node: Node) -> str:
    # ruamel has used both plain strings and Tag objects for node.tag.
    tag = node.tag
    return str(getattr(tag, "value", tag))


def _locate(text: str, root: Node | None, path: str, steps: list[str | int], source: str) -> _Scalar:
    """Walk ``steps`` from the root and describe the single-line scalar at the end."""
    if root is None:
        raise ValuesError("the document is empty", source=source, path=path)
    node: Node = root
    key_node: ScalarNode | None = None  # key whose value ``node`` is (None for list items)
    in_flow = False
    walked = ""  # path prefix for messages
    for step in steps:
        here = walked or "the document root"
        line = node.start_mark.line + 1
        in_flow = in_flow or bool(getattr(node, "flow_style", False))
        if isinstance(step, str):
            if not isinstance(node, MappingNode):
                raise ValuesError(
                    f"{here} is {_node_kind(node)}, not a mapping, so it has no key {step!r}",
                    source=source,
                    path=path,
                    line=line,
                )
            pairs = [
                (k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == step
            ]
            if not pairs:
                merged = any(_tag_of(k) == _MERGE_TAG for k, _ in node.value)
                hint = (
                    " (it may come from a merge key '<<'; edit the merged mapping instead)"
                    if merged
                    else ""
                )
                raise ValuesError(
                    f"key {step!r} not found in {here}{hint}", source=source, path=path, line=line
                )
            if len(pairs) > 1:
                lines = ", ".join(str(k.start_mark.line + 1) for k, _ in pairs)
                raise ValuesError(
                    f"key {step!r} appears {len(pairs)} times in {here} (lines {lines})",
                    source=source,
                    path=path,
                    line=pairs[-1][0].start_mark.line + 1,
                )
            key_node, child = pairs[0]
            # An alias resolves to the node defined at its anchor, i.e. earlier
            # in the text than the key it is written under.
            if child.start_mark.index < key_node.end_mark.index:
                _raise_alias(child, path, source, key_node.start_mark.line + 1)
            walked = f"{walked}.{step}" if walked else step
        else:
            if not isinstance(node, SequenceNode):
                raise ValuesError(
                    f"{here} is {_node_kind(node)}, not a list, so it has no item [{step}]",
                    source=source,
                    path=path,
                    line=line,
                )
            if step >= len(node.value):
                raise ValuesError(
                    f"list index [{step}] out of range: {here} has {len(node.value)} item(s)",
                    source=source,
                    path=path,
                    line=line,
                )
            # Items written in place start after the previous in-place item ends;
            # an alias item points back before that.
            floor = node.start_mark.index + 1
            for item in node.value[: step + 1]:
                if item.start_mark.index >= floor:
                    floor = item.end_mark.index
                elif item is node.value[step]:
                    _raise_alias(item, path, source, line)
            child = node.value[step]
            key_node = None
            walked = f"{walked}[{step}]"
        node = child

    if not isinstance(node, ScalarNode):
        raise ValuesError(
            f"the value is {_node_kind(node)}, not a scalar",
            source=source,
            path=path,
            line=node.start_mark.line + 1,
        )
    if node.style in ("|", ">"):
        raise ValuesError(
            f"the value is a block scalar ('{node.style}'), which spans lines; "
            "only single-line scalars are edited",
            source=source,
            path=path,
            line=node.start_mark.line + 1,
        )
    return _scalar_span(text, node, key_node, path, source, in_flow)


def _raise_alias(node: Node, path: str, source: str, line: int) -> NoReturn:
    anchor = getattr(node, "anchor", None)
    name = f"*{anchor}" if anchor else "an alias"
    raise ValuesError(
        f"the path goes through {name}; editing it would also change the anchored value "
        f"at line {node.start_mark.line + 1} and every other alias of it",
        source=source,
        path=path,
        line=line,
    )


def _scalar_span(
    text: str, node: ScalarNode, key_node: ScalarNode | None, path: str, source: str, in_flow: bool
) -> _Scalar:
    start, end = node.start_mark.index, node.end_mark.index
    # Step over "&anchor" / "!tag" so that they stay untouched.
    pos, after_props = start, None
    while True:
        prop = _PROPERTY.match(text, pos, end)
        if prop is None:
            break
        after_props = prop.end()
        pos = _SPACES.match(text, after_props, end).end()
        # Properties may be followed by a line break before the content.
        while pos < end and text[pos] in "\r\n":
            pos = _SPACES.match(text, pos + 1, end).end()

    value: str | None = None if _tag_of(node) == _NULL_TAG else node.value
    is_string = _tag_of(node) == _STR_TAG
    if pos < end:  # the scalar has text
        if _LINE_BREAK.search(text, pos, end):
            raise ValuesError(
                "the value spans several lines; only single-line scalars are edited",
                source=source,
                path=path,
                line=node.start_mark.line + 1,
            )
        line = node.start_mark.line + 1 + len(_LINE_BREAK.findall(text, start, pos))
        return _Scalar(pos, end, line, _STYLES[node.style], value, is_string, in_flow)

    # Empty value: nothing to replace, so the new text is inserted right after
    # the last indicator before it (the anchor/tag, else the key's ":").
    if after_props is not None:
        insert_at = after_props
        line = node.start_mark.line + 1 + len(_LINE_BREAK.findall(text, start, insert_at))
    else:
        if key_node is None:
            raise ValuesError(
                "the list item is empty; there is no position to write a value to",
                source=source,
                path=path,
                line=node.start_mark.line + 1,
            )
        # The composer's mark for an empty value is unreliable (it can point at
        # the next line), so find the ":" after the key ourselves.
        colon = _SPACES.match(text, key_node.end_mark.index).end()
        if colon >= len(text) or text[colon] != ":":
            raise ValuesError(
                "cannot find the ':' after the key to write the value after",
                source=source,
                path=path,
                line=key_node.end_mark.line + 1,
            )
        insert_at = colon + 1
        line = key_node.end_mark.line + 1
    return _Scalar(insert_at, insert_at, line, "empty", None, False, in_flow)


def _split_image_ref(ref: str, *, path: str, source: str, line: int) -> tuple[str, str | None]:
    """Split ``name:tag`` into name and tag (None when the reference has no tag)."""
    if "@" in ref:
        raise ValuesError(
            f"{ref!r} is pinned by digest; refusing to guess how a tag should combine with it",
            source=source,
            path=path,
            line=line,
        )
    colon = ref.rfind(":")
    # A ":" before the last "/" is a registry port (127.0.0.1:5000/x/app), not a tag.
    if colon > ref.rfind("/"):
        return ref[:colon], ref[colon + 1 :]
    return ref, None


def _new_value(scalar: _Scalar, write: TagWrite | RepositoryWrite, source: str) -> str:
    if isinstance(write, RepositoryWrite):
        return write.repository
    if write.kind == "tag":
        return write.tag
    if not scalar.value:
        raise ValuesError(
            "the image reference is empty; there is no name to put the tag on",
            source=source,
            path=write.path,
            line=scalar.line,
        )
    name, _ = _split_image_ref(scalar.value, path=write.path, source=source, line=scalar.line)
    return f"{name}:{write.tag}"


def _plan_edit(scalar: _Scalar, path: str, new: str, source: str) -> _Edit | None:
    """The splice that writes ``new`` at ``scalar``, or None if it is already there."""
    # A value that reads the same but loads as a number (plain 1.10) is not the
    # string the write asks for, so it is rewritten (quoted).
    if scalar.is_string and scalar.value == new:
        return None
    if scalar.style == "single-quoted":
        rendered = "'" + new.replace("'", "''") + "'"
    elif scalar.style == "plain" and _plain_loads_as_string(new, in_flow=scalar.in_flow):
        rendered = new
    else:
        rendered = _double_quoted(new)
    _check_rendered(rendered, new, path, source, scalar.line)
    if scalar.style == "empty":
        rendered = " " + rendered  # "key:" + " value", before whatever followed the ":"
    return _Edit(scalar.start, scalar.end, rendered, TagChange(path, scalar.value, new, scalar.line))


def _plain_loads_as_string(value: str, *, in_flow: bool) -> bool:
    """Whether ``value`` written plain is read back as this string by YAML 1.1, 1.2 and Helm."""
    if not _PLAIN_SAFE.fullmatch(value) or value.endswith(":"):
        return False
    # go-yaml v2 rejects "a:b" as a plain scalar inside flow collections.
    if in_flow and ":" in value:
        return False
    if value in _GO_YAML_BOOL_NULL or _GO_NUMBER.fullmatch(value.replace("_", "")):
        return False
    return all(
        str(getattr(t, "value", t)) == _STR_TAG
        for t in (r.resolve(ScalarNode, value, (True, False)) for r in _RESOLVERS)
    )


def _double_quoted(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _check_rendered(rendered: str, expected: str, path: str, source: str, line: int) -> None:
    # Cheap guard against a quoting bug: the new text alone must load as the string.
    try:
        loaded = YAML(typ="safe", pure=True).load(rendered)
    except YAMLError:
        loaded = None
    if loaded != expected or not isinstance(loaded, str):
        raise ValuesError(
            f"cannot write {expected!r} as a YAML string (rendered {rendered!r})",
            source=source,
            path=path,
            line=line,
        )
