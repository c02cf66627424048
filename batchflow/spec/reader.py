"""Reading a spec's YAML with every node's position, ``${VAR}`` expanded from the environment.

The shell's forms, so a spec reads as a shell user expects: ``${VAR}`` (unset is an error; empty stays empty),
``${VAR:-default}`` (the default when VAR is unset or empty), ``${VAR:?message}`` (an error at the value's
file:line:col with the message when VAR is unset or empty), and ``$${`` for a literal ``${``. A default or a
message runs to the first ``}``; it is not expanded again.

``allow_unset`` (``validate --allow-unset-env``) is for specs whose variables exist only where they run: an unset
variable then stays as written, ``${VAR}``, and is a note instead of an error; a field that must be a number or a
duration still fails the schema with it, since nothing can check such a field without its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from batchflow.errors import SpecError


class InvalidSpec(SpecError):
    """A spec with one or more problems: ``str()`` is every line, ``problems`` the list of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


Problem = tuple[int, int, str, str]  # line, column (1-based), dotted path, message
_MAX_NODES = 200_000  # after aliases are expanded: stops "billion laughs" before it eats the memory
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def read_text(path: Path | str, label: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InvalidSpec([f"{label}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise InvalidSpec([f"{label}: cannot read: not UTF-8 text (byte {exc.start})"]) from None


class Reader:
    """Turns a composed YAML node tree into plain data, noting where every path was written."""

    def __init__(self, environ: Mapping[str, str], allow_unset: bool = False) -> None:
        self.environ = environ
        self.allow_unset = allow_unset
        self.loader = yaml.SafeLoader("")
        self.values: dict[str, tuple[int, int]] = {}  # dotted path -> where its value starts
        self.keys: dict[str, tuple[int, int]] = {}  # dotted path -> where its key is written
        self.problems: list[Problem] = []
        self.env_paths: set[str] = set()  # where an unset variable is an error (its schema problems are not)
        self.notes: list[Problem] = []  # unset variables allowed by ``allow_unset``
        self.data: Any = None
        self.label = ""
        self._open: set[int] = set()
        self._count = 0

    def read(self, text: str, label: str) -> Reader:
        self.label = label
        root = _compose(text, label)
        self.data = None if root is None else self.build(root, "")
        return self

    def where(self, dotted: str, *, key: bool = False) -> tuple[int, int]:
        parts = dotted.split(".") if dotted else []
        for n in range(len(parts), -1, -1):
            sub = ".".join(parts[:n])
            found = (key and self.keys.get(sub)) or self.values.get(sub)
            if found:
                return found
        return 1, 1

    def build(self, node: yaml.Node, dotted: str) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            line, col = _pos(node.start_mark)
            raise InvalidSpec([f"{self.label}:{line}:{col}: the spec is too large once its aliases are expanded"])
        if id(node) in self._open:
            return self._problem(node, dotted, "an alias refers to itself")
        self.values.setdefault(dotted, _pos(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, dotted)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, join_path(dotted, str(i))) for i, item in enumerate(node.value)]
            return self._mapping(node, dotted)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.Node, dotted: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append(value_node)
            elif not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, dotted, "a key must be a plain string")
            else:
                sub = join_path(dotted, key_node.value)
                if key_node.value in out:
                    first = self.keys[sub][0]
                    self._problem(key_node, sub, f"duplicate key '{key_node.value}' (first on line {first})")
                self.keys.setdefault(sub, _pos(key_node.start_mark))
                out[key_node.value] = self.build(value_node, sub)
        for merged in merges:  # YAML "<<: *anchor": the mapping's own keys win
            for source in merged.value if isinstance(merged, yaml.SequenceNode) else [merged]:
                value = self.build(source, dotted)
                if not isinstance(value, dict):
                    self._problem(source, dotted, "'<<' must merge a mapping")
                    continue
                for key, item in value.items():
                    out.setdefault(key, item)
        return out

    def _scalar(self, node: yaml.ScalarNode, dotted: str) -> Any:
        value = self._construct(node, dotted)
        if isinstance(value, str) and "${" in value:
            expanded = _VAR.sub(lambda m: self._variable(m, node, dotted), value)
            if node.style is None and expanded != value:  # a plain ${N} may stand for a number or a bool
                tag = self.loader.resolve(yaml.ScalarNode, expanded, (True, False))  # type: ignore[no-untyped-call]
                return self._construct(yaml.ScalarNode(tag, expanded), dotted)
            return expanded
        return value

    def _construct(self, node: yaml.ScalarNode, dotted: str) -> Any:
        if node.tag == _TAG + "timestamp":  # keep dates as written: JSON has no date type
            return node.value
        if node.tag not in _SCALAR_TAGS:
            return self._problem(node, dotted, f"unsupported YAML tag {node.tag}")
        try:
            return self.loader.yaml_constructors[node.tag](self.loader, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            return node.value

    def _variable(self, match: re.Match[str], node: yaml.Node, dotted: str) -> str:
        name, form, word = match.groups()
        if name is None:  # "$${" escapes a literal "${"
            return "${"
        value = self.environ.get(name)
        if value is not None and (value or form is None):  # ":-" and ":?" take an empty value for an unset one
            return value
        if form == ":-":
            return str(word)
        if self.allow_unset:
            self.notes.append((*_pos(node.start_mark), dotted, _unset(name, form, word)))
            return match.group(0)
        self.env_paths.add(dotted)
        self._problem(node, dotted, _unset(name, form, word))
        return match.group(0)

    def _problem(self, node: yaml.Node, dotted: str, message: str) -> None:
        self.problems.append((*_pos(node.start_mark), dotted, message))


def _unset(name: str, form: str | None, message: str | None) -> str:
    """Why a variable could not be expanded: ``${VAR}`` needs it set, ``${VAR:?…}`` set and not empty."""
    if form is None:
        return f"environment variable {name} is not set"
    return f"environment variable {name} is not set or empty" + (f": {message}" if message else "")


def join_path(dotted: str, part: str) -> str:
    return f"{dotted}.{part}" if dotted else part


def _compose(text: str, label: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (1, 1)
        problem = exc.problem or exc.context or "malformed"
        raise InvalidSpec([f"{label}:{line}:{col}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:  # the reader's errors: a character YAML does not allow
        offset = getattr(exc, "position", 0)
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        reason = getattr(exc, "reason", "malformed")
        raise InvalidSpec([f"{label}:{line}:{col}: invalid YAML: {reason}"]) from None
    return node


