"""Tests for coelho_pipeline.values: tag writes that change nothing but the tag.

Covers the real-world values corpus (tests/data/values-corpus, or
$COELHO_VALUES_CORPUS), golden input/expected files under
tests/golden/values/<case>/, every error path, idempotence and write-then-revert
round trips. Expected outputs are written by hand or derived from the corpus'
cases.yaml, never produced by the code under test.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from coelho_pipeline.values import (
    TagChange,
    TagKind,
    TagWrite,
    ValuesError,
    read_scalar,
    read_tag,
    set_tags,
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
GOLDEN = TESTS / "golden" / "values"
CORPUS = Path(
    os.environ.get("COELHO_VALUES_CORPUS")
    or (REPO / "tests" / "data" / "values-corpus")
).resolve()

NEW_TAG = "9.9.9-conformance"


def _safe_load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def _steps(path: str) -> list[str | int]:
    out: list[str | int] = []
    for segment in path.split("."):
        out.append(segment.split("[")[0])
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", segment))
    return out


def _get(data: Any, path: str) -> Any:
    for step in _steps(path):
        data = data[step]
    return data


def _set(data: Any, path: str, value: Any) -> None:
    *parents, last = _steps(path)
    for step in parents:
        data = data[step]
    data[last] = value


# --------------------------------------------------------------------------- corpus


@cache
def _corpus_cases() -> list[dict[str, Any]]:
    data = _safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
    return [dict(case, file=entry["file"]) for entry in data["files"] for case in entry["cases"]]


def _corpus_params() -> list[Any]:
    # A missing corpus must fail loudly, not skip: collect one placeholder case.
    if not (CORPUS / "cases.yaml").is_file():
        return [pytest.param(None, id="corpus-missing")]
    return [
        pytest.param(case, id=f"{case['file'].removesuffix('.values.yaml')}:{case['path']}")
        for case in _corpus_cases()
    ]


def _corpus_files() -> list[Any]:
    if not (CORPUS / "cases.yaml").is_file():
        return [pytest.param(None, id="corpus-missing")]
    return sorted({case["file"] for case in _corpus_cases()})


def _require_corpus(item: object) -> None:
    if item is None:
        pytest.fail(
            f"values corpus not found at {CORPUS} (expected cases.yaml there); "
            "set COELHO_VALUES_CORPUS to the directory holding it"
        )


@cache
def _corpus_text(name: str) -> str:
    # Bytes decoded as-is: no newline translation.
    return (CORPUS / name).read_bytes().decode("utf-8")


@cache
def _corpus_data(name: str) -> Any:
    return _safe_load(_corpus_text(name))


def _split_scalar_line(line: str, key: str, style: str, value: str | None) -> tuple[str, str, str]:
    """Split a ``key: value  # comment`` line into head, scalar text and tail."""
    match = re.match(rf"[ ]*(?:- )?{re.escape(key)}:", line)
    assert match, f"line does not start with {key!r}: {line!r}"
    head, rest = match.group(0), line[match.end() :]
    if style == "empty":
        return head, "", rest
    spaces = len(rest) - len(rest.lstrip(" "))
    head, rest = head + rest[:spaces], rest[spaces:]
    scalar = {"plain": value, "double-quoted": f'"{value}"'}[style]
    assert scalar is not None and rest.startswith(scalar), (line, scalar)
    return head, scalar, rest[len(scalar) :]


def _expected_new_value(case: dict[str, Any]) -> str:
    if case["kind"] == "tag":
        return NEW_TAG
    name = case["value"].rsplit(":", 1)[0]
    return f"{name}:{NEW_TAG}"


@pytest.mark.parametrize("case", _corpus_params())
def test_corpus_conformance(case: dict[str, Any] | None) -> None:
    _require_corpus(case)
    assert case is not None
    text = _corpus_text(case["file"])
    path, kind, line_no = case["path"], case["kind"], case["line"]

    assert read_scalar(text, path, source=case["file"]) == case["value"]
    expected_tag = case["value"].rsplit(":", 1)[1] if kind == "image-string" else case["value"]
    assert read_tag(text, path, kind, source=case["file"]) == expected_tag

    out, changes = set_tags(text, [TagWrite(path, NEW_TAG, kind)], source=case["file"])
    new_value = _expected_new_value(case)
    assert changes == [TagChange(path=path, old=case["value"], new=new_value, line=line_no)]

    # Exactly one line differs, and only in the scalar's text.
    before, after = text.splitlines(keepends=True), out.splitlines(keepends=True)
    assert len(before) == len(after)
    assert [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a != b] == [line_no]
    key = path.rsplit(".", 1)[-1]
    head, _, tail = _split_scalar_line(before[line_no - 1], key, case["style"], case["value"])
    new_scalar = new_value if case["style"] == "plain" else f'"{new_value}"'
    if case["style"] == "empty":
        new_scalar = " " + new_scalar
    assert after[line_no - 1] == head + new_scalar + tail

    # Semantically, the document is the original with that one value replaced.
    expected = copy.deepcopy(_corpus_data(case["file"]))
    _set(expected, path, new_value)
    assert _safe_load(out) == expected


def test_corpus_cases_cover_every_file() -> None:
    """Every values file in the corpus directory has at least one case."""
    _require_corpus(CORPUS if (CORPUS / "cases.yaml").is_file() else None)
    on_disk = {p.name for p in CORPUS.glob("*.values.yaml")}
    assert on_disk == {case["file"] for case in _corpus_cases()}


_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _image_tags(root: Node) -> Iterator[tuple[str, TagKind, str]]:
    """Every string ``tag:`` scalar, and every ``image:`` string that ends in a
    ``:tag``, in document order and not reached through an alias: (path, kind,
    current tag)."""
    seen: set[int] = set()

    def tag_of(key: str, value: Node) -> tuple[TagKind, str] | None:
        if not (
            isinstance(value, ScalarNode)
            and value.tag == "tag:yaml.org,2002:str"
            and value.style in (None, "'", '"')
        ):
            return None
        if key == "tag" and _TAG_RE.fullmatch(value.value):
            return "tag", value.value
        name, colon, tag = value.value.rpartition(":")
        if key == "image" and colon and "/" not in tag and "@" not in value.value:
            return ("image-string", tag) if _TAG_RE.fullmatch(tag) else None
        return None

    def walk(node: Node, path: str) -> Iterator[tuple[str, TagKind, str]]:
        if id(node) in seen:  # second visit = an alias; its anchor was visited first
            return
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value != "<<":
                    sub = f"{path}.{key.value}" if path else key.value
                    found = tag_of(key.value, value) if id(value) not in seen else None
                    if found:
                        seen.add(id(value))
                        yield sub, *found
                    else:
                        yield from walk(value, sub)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, f"{path}[{i}]")

    yield from walk(root, "")


@pytest.mark.parametrize("name", _corpus_files())
def test_corpus_write_then_revert_is_byte_identical(name: str | None) -> None:
    """Write a tag into every image tag of a corpus file (``tag:`` keys and
    ``image: name:tag`` strings), then write the old tags back: the result is
    the original file, byte for byte."""
    _require_corpus(name)
    assert name is not None
    text = _corpus_text(name)
    found = list(_image_tags(YAML(typ="rt").compose(text)))
    assert found, f"{name}: no image tags found"
    forward = [TagWrite(path, "rt-probe", kind) for path, kind, _ in found]
    out, changes = set_tags(text, forward, source=name)
    assert len(changes) == len(forward)
    changed_lines = [
        i for i, (a, b) in enumerate(zip(text.splitlines(), out.splitlines())) if a != b
    ]
    assert len(changed_lines) == len({c.line for c in changes})
    back, reverted = set_tags(
        out, [TagWrite(path, old, kind) for path, kind, old in found], source=name
    )
    assert len(reverted) == len(changes)
    assert back == text
    # Idempotence on the big files too.
    again, none = set_tags(out, forward, source=name)
    assert none == [] and again is out


def _tag_shaped_scalars(root: Node) -> Iterator[tuple[str, ScalarNode]]:
    """Every single-line string scalar whose text is a valid Docker tag (names,
    pull policies, ports, ...), addressable by a key path, in document order.
    Anchored scalars are left out: writing them also changes their aliases,
    which the plain-data comparison below does not model (see the anchors
    golden case)."""
    seen: set[int] = set()

    def walk(node: Node, path: str) -> Iterator[tuple[str, ScalarNode]]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and re.fullmatch(r"[^.\[\]<]+", key.value):
                    yield from walk(value, f"{path}.{key.value}" if path else key.value)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, f"{path}[{i}]")
        elif (
            isinstance(node, ScalarNode)
            and node.tag == "tag:yaml.org,2002:str"
            and node.style in (None, "'", '"')
            and node.anchor is None
            and node.start_mark.line == node.end_mark.line
            and _TAG_RE.fullmatch(node.value)
        ):
            yield path, node

    yield from walk(root, "")


@pytest.mark.parametrize("name", _corpus_files())
def test_corpus_every_tag_shaped_scalar_round_trips(name: str | None) -> None:
    """Positional accuracy at scale: overwrite every tag-shaped scalar of a corpus
    file in one call (hundreds of splices, in flow and block collections), check
    the loaded data, then write the old values back and get the original bytes."""
    _require_corpus(name)
    assert name is not None
    text = _corpus_text(name)
    found = list(_tag_shaped_scalars(YAML(typ="rt").compose(text)))
    assert len(found) >= 10
    out, changes = set_tags(text, [TagWrite(path, "probe-x") for path, _ in found], source=name)
    assert len(changes) == len(found)
    expected = copy.deepcopy(_corpus_data(name))
    for path, _ in found:
        _set(expected, path, "probe-x")
    assert _safe_load(out) == expected
    back, _ = set_tags(out, [TagWrite(path, node.value) for path, node in found], source=name)
    assert back == text


# --------------------------------------------------------------------------- golden files


def _golden_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "writes.yaml").is_file())


def _golden_writes(case: str) -> list[TagWrite]:
    spec = _safe_load((GOLDEN / case / "writes.yaml").read_text(encoding="utf-8"))
    return [TagWrite(str(w["path"]), str(w["tag"]), w.get("kind", "tag")) for w in spec["writes"]]


def test_golden_cases_exist() -> None:
    assert len(_golden_cases()) >= 15


@pytest.mark.parametrize("case", _golden_cases())
def test_golden(case: str) -> None:
    source = (GOLDEN / case / "input.yaml").read_bytes().decode("utf-8")
    expected = (GOLDEN / case / "expected.yaml").read_bytes().decode("utf-8")
    writes = _golden_writes(case)
    out, changes = set_tags(source, writes, source=f"{case}/input.yaml")
    assert out == expected
    assert [c.path for c in changes] == [w.path for w in writes]
    # Every write now reads back as a string with the requested tag.
    for write in writes:
        assert read_tag(out, write.path, write.kind) == write.tag
        assert isinstance(_get(_safe_load(out), write.path), str)


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_idempotent(case: str) -> None:
    source = (GOLDEN / case / "input.yaml").read_bytes().decode("utf-8")
    writes = _golden_writes(case)
    once, _ = set_tags(source, writes)
    twice, changes = set_tags(once, writes)
    assert changes == []
    assert twice is once


# --------------------------------------------------------------------------- behaviour


def test_no_writes_returns_the_input_object() -> None:
    text = "a:\n  tag: v1\n"
    assert set_tags(text, []) == (text, [])
    out, changes = set_tags(text, [TagWrite("a.tag", "v1")])
    assert out is text and changes == []


def test_changes_record_old_new_and_line_in_write_order() -> None:
    text = 'x:\n  tag: ""\ny:\n  tag:   # empty\nz:\n  image: repo/app:1.0\n'
    out, changes = set_tags(
        text,
        [
            TagWrite("z.image", "2.0", "image-string"),
            TagWrite("x.tag", "a1"),
            TagWrite("y.tag", "b2"),
        ],
    )
    assert changes == [
        TagChange("z.image", "repo/app:1.0", "repo/app:2.0", 6),
        TagChange("x.tag", "", "a1", 2),
        TagChange("y.tag", None, "b2", 4),
    ]
    assert out == 'x:\n  tag: "a1"\ny:\n  tag: "b2"   # empty\nz:\n  image: repo/app:2.0\n'


def test_same_write_twice_in_one_call_is_one_change() -> None:
    out, changes = set_tags("a: {tag: v1}\n", [TagWrite("a.tag", "v2"), TagWrite("a.tag", "v2")])
    assert out == "a: {tag: v2}\n"
    assert len(changes) == 1


def test_all_or_nothing() -> None:
    """A valid write next to an invalid one produces no output at all."""
    text = "a:\n  tag: v1\nb:\n  tag: v1\n"
    with pytest.raises(ValuesError, match="b.missing"):
        set_tags(text, [TagWrite("a.tag", "v2"), TagWrite("b.missing", "v2")])


@pytest.mark.parametrize(
    ("tag", "written"),
    [
        ("1.10", '"1.10"'),
        ("1", '"1"'),
        ("0123", '"0123"'),
        ("0x1F", '"0x1F"'),
        ("0X1F", '"0X1F"'),  # a string to ruamel, an int to go-yaml v2 (Helm)
        ("0x1p3", '"0x1p3"'),  # a string to ruamel, a hex float to go-yaml v2
        ("1e3", '"1e3"'),
        ("1_000", '"1_000"'),
        ("true", '"true"'),
        ("False", '"False"'),
        ("yes", '"yes"'),
        ("on", '"on"'),
        ("y", '"y"'),
        ("N", '"N"'),
        ("null", '"null"'),
        ("nan", "nan"),  # a string in go-yaml v2 too: only ".nan" is a float
        ("inf", "inf"),
        ("2024-01-02", '"2024-01-02"'),
        ("4.0.0", "4.0.0"),
        ("1.2.3-rc1", "1.2.3-rc1"),
        ("v1.10", "v1.10"),
        ("latest", "latest"),
        ("3f9c2ab", "3f9c2ab"),
        ("_x", "_x"),
        ("sha-0123456789ab", "sha-0123456789ab"),
    ],
)
def test_plain_tag_quoted_only_when_it_would_not_load_as_string(tag: str, written: str) -> None:
    out, _ = set_tags("app:\n  tag: v0  # c\n", [TagWrite("app.tag", tag)])
    assert out == f"app:\n  tag: {written}  # c\n"
    # Loads back as this string in YAML 1.2 and in YAML 1.1 (Helm's dialect).
    assert _safe_load(out)["app"]["tag"] == tag
    assert _safe_load("%YAML 1.1\n---\n" + out)["app"]["tag"] == tag


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("repo/app:1.0", "1.0"),
        ("127.0.0.1:5000/x/app", None),
        ("127.0.0.1:5000/x/app:abc", "abc"),
        ("nginx", None),
        ("app:", ""),
    ],
)
def test_read_tag_image_string(value: str, tag: str | None) -> None:
    text = f'image: "{value}"\n'
    assert read_scalar(text, "image") == value
    assert read_tag(text, "image", "image-string") == tag


def test_read_tag_empty_values() -> None:
    text = 'a: ""\nb:\nc: ~\n'
    assert read_tag(text, "a", "image-string") == ""
    assert read_tag(text, "b", "image-string") is None
    assert read_tag(text, "c") is None
    assert read_scalar(text, "c") is None


def test_read_scalar_returns_text_of_non_string_plain_values() -> None:
    assert read_scalar("a: 1.10\nb: true\n", "a") == "1.10"
    assert read_scalar("a: 1.10\nb: true\n", "b") == "true"


def test_double_quoted_escapes_are_rendered() -> None:
    out, changes = set_tags('image: "a\\\\b:1"\n', [TagWrite("image", "2", "image-string")])
    assert changes[0].new == "a\\b:2"
    assert out == 'image: "a\\\\b:2"\n'


# --------------------------------------------------------------------------- errors

SRC = "charts/app/values.yaml"

ALIASES = """\
base:
  image: &img
    repository: x
    tag: "1.0"
  tag: &t "1.0"
app:
  image: *img
  tag: *t
  list: [&item {tag: v1}, *item]
merged:
  <<: *img
"""


@pytest.mark.parametrize(
    ("text", "path", "kind", "tag", "line", "reason"),
    [
        pytest.param("a:\n  b: 1\n", "a.tag", "tag", "v1", 2, "key 'tag' not found in a", id="missing-leaf"),
        pytest.param("a:\n  b: 1\n", "x.tag", "tag", "v1", 1, "key 'x' not found in the document root", id="missing-root-key"),
        pytest.param("a:\n  b:\n    c: 1\n", "a.x.c", "tag", "v1", 2, "key 'x' not found", id="missing-middle"),
        pytest.param("a:\n  b: 1\n", "a.b.tag", "tag", "v1", 2, "a.b is a scalar, not a mapping", id="through-scalar"),
        pytest.param("a:\n  - 1\n", "a.tag", "tag", "v1", 2, "a is a list, not a mapping", id="through-list"),
        pytest.param("a:\n  b: 1\n", "a[0]", "tag", "v1", 2, "a is a mapping, not a list", id="index-on-mapping"),
        pytest.param("a:\n  - x: 1\n", "a[1].x", "tag", "v1", 2, "list index [1] out of range: a has 1 item", id="index-out-of-range"),
        pytest.param("a:\n  image:\n    tag: v1\n", "a.image", "tag", "v1", 3, "the value is a mapping, not a scalar", id="target-mapping"),
        pytest.param("a:\n  tags: [v1]\n", "a.tags", "tag", "v1", 2, "the value is a list, not a scalar", id="target-list"),
        pytest.param("a:\n  tag: |\n    v1\n", "a.tag", "tag", "v1", 2, "block scalar ('|')", id="block-literal"),
        pytest.param("a:\n  tag: >-\n    v1\n", "a.tag", "tag", "v1", 2, "block scalar ('>')", id="block-folded"),
        pytest.param('a:\n  tag: "v1\n    v2"\n', "a.tag", "tag", "v1", 2, "spans several lines", id="multiline-double"),
        pytest.param("a:\n  tag: v1\n    v2\n", "a.tag", "tag", "v1", 2, "spans several lines", id="multiline-plain"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", "bad tag", 2, "not a valid Docker tag", id="tag-space"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", ".dot", 2, "not a valid Docker tag", id="tag-leading-dot"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", "-dash", 2, "not a valid Docker tag", id="tag-leading-dash"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", "x" * 129, 2, "not a valid Docker tag", id="tag-too-long"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", "v1:2", 2, "not a valid Docker tag", id="tag-colon"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", "", 2, "not a valid Docker tag", id="tag-empty"),
        pytest.param("a:\n  tag: v1\n", "a.tag", "tag", 'v1"', 2, "not a valid Docker tag", id="tag-quote"),
        pytest.param(ALIASES, "app.tag", "tag", "v2", 8, "goes through *t", id="alias-scalar"),
        pytest.param(ALIASES, "app.image.tag", "tag", "v2", 7, "goes through *img", id="through-alias-map"),
        pytest.param(ALIASES, "app.list[1].tag", "tag", "v2", 9, "goes through *item", id="alias-list-item"),
        pytest.param(ALIASES, "merged.tag", "tag", "v2", 11, "merge key '<<'", id="merge-key"),
        pytest.param("a:\n  tag: v1\n  tag: v2\n", "a.tag", "tag", "v3", 3, "appears 2 times in a (lines 2, 3)", id="duplicate-key"),
        pytest.param("a: repo/app@sha256:abc\n", "a", "image-string", "v2", 1, "pinned by digest", id="digest"),
        pytest.param("a: repo/app:1@sha256:abc\n", "a", "image-string", "v2", 1, "pinned by digest", id="tag-and-digest"),
        pytest.param('a: ""\n', "a", "image-string", "v2", 1, "image reference is empty", id="empty-image-string"),
        pytest.param("a:\n", "a", "image-string", "v2", 1, "image reference is empty", id="null-image-string"),
        pytest.param("a:\n  -\n  - x\n", "a[0]", "tag", "v2", 2, "list item is empty", id="empty-list-item"),
        pytest.param("a:\n  b: 1\n c: 2\n", "a.b", "tag", "v1", 3, "invalid YAML (column 2)", id="invalid-yaml"),
        pytest.param("a: [1, 2\nb: 3\n", "a", "tag", "v1", 2, "invalid YAML", id="invalid-yaml-flow"),
        pytest.param("a: 1\n---\nb: 2\n", "a", "tag", "v1", 2, "invalid YAML", id="two-documents"),
    ],
)
def test_errors(text: str, path: str, kind: str, tag: str, line: int, reason: str) -> None:
    with pytest.raises(ValuesError) as raised:
        set_tags(text, [TagWrite(path, tag, kind)], source=SRC)  # type: ignore[arg-type]
    error = raised.value
    message = str(error)
    assert message.startswith(f"{SRC}:{line}: "), message
    assert path in message
    assert reason in message
    assert (error.source, error.path, error.line) == (SRC, path, line)


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("a: 1\n", "a..b", "malformed key path"),
        ("a: 1\n", "a[x]", "malformed key path"),
        ("a: 1\n", "", "malformed key path"),
        ("", "a", "the document is empty"),
        ("# only a comment\n", "a", "the document is empty"),
        ("a: \x07\n", "a", "invalid YAML"),
    ],
)
def test_errors_without_a_line(text: str, path: str, reason: str) -> None:
    with pytest.raises(ValuesError) as raised:
        set_tags(text, [TagWrite(path, "v1")], source=SRC)
    message = str(raised.value)
    assert message.startswith(f"{SRC}: {path}: ") and reason in message, message


def test_unknown_kind() -> None:
    with pytest.raises(ValuesError, match=r"^charts/app/values\.yaml:1: a: unknown kind 'digest'"):
        set_tags("a: x:1\n", [TagWrite("a", "v1", "digest")], source=SRC)  # type: ignore[arg-type]
    with pytest.raises(ValuesError, match=r"^charts/app/values\.yaml:1: a: unknown kind 'digest'"):
        read_tag("a: x:1\n", "a", "digest", source=SRC)  # type: ignore[arg-type]


def test_values_error_pickles() -> None:
    error = ValuesError("boom", source=SRC, path="a.tag", line=3)
    clone = pickle.loads(pickle.dumps(error))
    assert (str(clone), clone.reason, clone.source, clone.path, clone.line) == (
        str(error), "boom", SRC, "a.tag", 3
    )


def test_conflicting_writes_to_one_scalar() -> None:
    with pytest.raises(ValuesError) as raised:
        set_tags("a:\n  tag: v1\n", [TagWrite("a.tag", "v2"), TagWrite("a.tag", "v3")], source=SRC)
    assert str(raised.value).startswith(f"{SRC}:2: a.tag: conflicting writes")


@pytest.mark.parametrize("func", [read_scalar, read_tag])
def test_read_errors_name_source_path_and_line(func: Any) -> None:
    with pytest.raises(ValuesError, match=r"^charts/app/values\.yaml:2: a\.missing: key 'missing'"):
        func("a:\n  tag: v1\n", "a.missing", source=SRC)


def test_read_tag_rejects_digest() -> None:
    with pytest.raises(ValuesError, match=r"^values\.yaml:1: image: .*pinned by digest"):
        read_tag("image: app@sha256:0123\n", "image", "image-string")


def test_anchored_definition_is_editable_but_alias_is_not() -> None:
    out, changes = set_tags(ALIASES, [TagWrite("base.tag", "2.0"), TagWrite("base.image.tag", "2.0")])
    assert [c.line for c in changes] == [5, 4]
    assert out == ALIASES.replace('  tag: &t "1.0"', '  tag: &t "2.0"').replace(
        '    tag: "1.0"', '    tag: "2.0"'
    )
    loaded = _safe_load(out)
    assert loaded["app"]["tag"] == "2.0" and loaded["app"]["image"]["tag"] == "2.0"
