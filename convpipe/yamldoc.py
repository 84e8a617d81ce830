"""YAML that remembers where each key was written, for error messages that name the line.

Plain scalars resolve as in YAML 1.2 where 1.1 surprises (only ``true`` and
``false`` are booleans); every error is a
:class:`~convpipe.errors.ConfigError` naming the file and the line. The
checks of plain values (:func:`choice`, :func:`pair`, ...) raise
``ValueError`` with a message the caller leads with the key.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from typing import Any

import yaml

from convpipe.errors import ConfigError

_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")

MAX_TEXT = 4 * 2**20
MAX_NODES = 200_000
"""Values a config may hold: a bank of 3 kernels of 256x256 weights fits; a 2000x2000 kernel does not."""


class YamlDoc:
    """A parsed YAML document that remembers the line of every key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple, int] = {}

    def error(self, key: tuple, message: str) -> ConfigError:
        """An error about ``key`` (``("kernels", 0, "name")`` is written ``kernels[0].name``), at its line."""
        place = where(self.source, self.lines, key)
        name = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in key)
        name = name.replace(".[", "[")
        return ConfigError(f"{place}: {name}: {message}" if name else f"{place}: {message}", key=name or None)

    def mapping(self, value: Any, key: tuple, allowed: tuple[str, ...], required: tuple = ()) -> dict:
        """``value`` as a mapping whose keys are all in ``allowed``, and that holds the ``required`` ones."""
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping with keys {', '.join(allowed)}, got {show(value)}")
        for name in value:
            if name not in allowed:
                raise self.error(key + (name,), f"unknown key; expected one of {', '.join(allowed)}")
        for name in required:
            if name not in value:
                raise self.error(key, f"missing required key {name!r}")
        return value

    def parsed(self, mapping: dict[str, Any], parsers: dict[str, Callable], key: tuple = ()) -> dict:
        """The values of ``mapping`` (at ``key``) that ``parsers`` names, each parsed, in the parsers' order.

        A parser's ``ValueError`` becomes an error naming the key and its line;
        a value parsed to None is left out (the default).
        """
        values = {}
        for name, parse in parsers.items():
            if name in mapping:
                try:
                    values[name] = parse(mapping[name])
                except ValueError as exc:
                    raise self.error(key + (name,), str(exc)) from None
        return {name: value for name, value in values.items() if value is not None}

    def to_python(self, node: yaml.Node, key: tuple = ()) -> Any:
        self.lines.setdefault(key, node.start_mark.line + 1)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)  # as written: !!python/name:x
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
            raise self.error(key, f"unsupported YAML tag {tag}; write a plain mapping or list")
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"{self.source}:{line}: keys must be plain names, got a {key_node.id}")
                name = key_node.value
                self.lines[key + (name,)] = key_node.start_mark.line + 1
                if name in result:
                    raise self.error(key + (name,), "duplicate key")
                result[name] = self.to_python(value_node, key + (name,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.to_python(item, key + (i,)) for i, item in enumerate(node.value)]
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node)
        except yaml.YAMLError:
            raise self.error(key, f"unsupported YAML tag {tag}; write a plain value") from None
        finally:
            loader.dispose()


def where(source: str, lines: dict[tuple, int], key: tuple) -> str:
    """``source:line`` of ``key``, or of its closest parent in ``lines``; ``source`` alone without one."""
    while key and key not in lines:
        key = key[:-1]
    line = lines.get(key)
    return f"{source}:{line}" if line else source


def show(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    """An integer, Python's or NumPy's (a mapping config from a notebook may hold either), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def choice(choices: tuple[str, ...], value: Any) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {show(value)}")
    return value


def boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, got {show(value)}")
    return value


def pair(what: str, value: Any) -> tuple[int, int]:
    """A positive int, or a [y, x] list (or tuple) of two: ``(y, x)``; ValueError "must be ``what``" else."""
    if is_int(value) and value >= 1:
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"must be {what}, got {show(value)}")


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that resolves plain scalars as YAML 1.2 does where 1.1 surprises.

    Only ``true`` and ``false`` are booleans (a kernel named ``no`` or ``on``
    stays a string), and floats without a dot (``1e-3``) are numbers.
    Aliases (``*name``) are refused: a few nested ones expand a small file
    exponentially (the "billion laughs"), and a config never needs them.
    """

    nodes = 0

    def compose_node(self, parent, index):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            problem = f"more than {MAX_NODES:,} values; a config (kernels included) must stay smaller"
            raise yaml.composer.ComposerError(problem=problem, problem_mark=self.peek_event().start_mark)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            problem = f"aliases (*{event.anchor}) are not allowed in a config; write the value out"
            raise yaml.composer.ComposerError(problem=problem, problem_mark=event.start_mark)
        return super().compose_node(parent, index)


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> tuple[Any, YamlDoc]:
    if len(text) > MAX_TEXT:
        raise ConfigError(
            f"{source}: the config is {len(text) / 2**20:.1f} MiB; a config must stay under "
            f"{MAX_TEXT // 2**20} MiB (pass larger kernels to convpipe.correlate from Python)"
        )
    doc = YamlDoc(source)
    try:
        node = yaml.compose(text, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):  # "expected a single document ..., but found ..."
            problem = f"{context}, {problem}"
        raise ConfigError(f"{source}{line}: invalid YAML: {problem}") from None
    if node is None:
        raise ConfigError(f"{source}: the config is empty; expected a mapping with input, kernels, output")
    return doc.to_python(node), doc
