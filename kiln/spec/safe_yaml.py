"""YAML → Python values, bounded in time and memory whatever the text.

    text ──libyaml: parse + compose──▶ node graph ──_check_graph──▶ construct ──▶ dict
           (C; nesting capped at 1000) │ depth ≤ 50, ≤ 100 aliases,  │ duplicate keys refused,
                                       │ ≤ 100,000 values expanded   │ integers within int64

What a person would expect from a config file, and what a hostile text cannot abuse:

- **Aliases** (``&defaults`` … ``*defaults``, ``<<: *defaults``) work, but only 100 uses and
  only while the document they expand to stays about as big as 256 KiB of plain text could
  be: a 440-byte "billion laughs" fails at once instead of filling memory when validated.
  An alias inside the node it names (a recursive document) is refused.
- **Duplicate keys** are refused (YAML says keys are unique; PyYAML silently keeps the last).
  Keys merged in with ``<<`` may still be overridden: that is what merging is for.
- **Scalars** resolve like YAML 1.1 (what PyYAML does) minus two traps: ``1000:50`` is not the
  base-60 number 60050 and ``on``/``yes``/``no`` are not booleans — only ``true``/``false``
  are (so ``COUNTRY: no`` stays ``"no"``; boolean fields still accept yes/no as strings).
- **Integers** beyond 64 bits are refused with their line, never parsed digit by digit.

``YamlRefused`` carries one message with its line and column; values are never echoed long.
Needs PyYAML built with libyaml (``yaml.CParser``): its parser caps nesting and does not
recurse in Python.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import BaseResolver

from kiln.spec.limits import MAX_YAML_ALIASES, MAX_YAML_DEPTH, MAX_YAML_NODES
from kiln.spec.problems import shown

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_MAX_INT_TEXT = 100  # characters: far more than any 64-bit integer needs, with _ separators
_INT64 = range(-(2**63), 2**63)
_MESSAGE_CHARACTERS = 200


class YamlRefused(ValueError):
    """The text is not YAML kiln accepts; ``str(exc)`` says where and why."""


def load_yaml(text: str) -> Any:
    """The single document in ``text`` as Python values (``None`` for an empty document)."""
    loader = _SpecLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_graph(node)
            return loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            raise YamlRefused(_describe(exc)) from exc
        except yaml.YAMLError as exc:  # unmarked: reader errors carry a position of their own
            raise YamlRefused(_cut(f"not valid YAML: {exc}")) from exc
    finally:
        loader.dispose()


def _describe(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "unreadable"
    if isinstance(exc, ConstructorError) and mark:  # valid YAML, but not what kiln accepts
        return _cut(f"line {mark.line + 1}, column {mark.column + 1}: {problem}")
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return _cut(f"not valid YAML{where}: {problem}")


def _cut(message: str) -> str:
    # libyaml's messages can quote the input (an undefined alias's name, a tag).
    return message if len(message) <= _MESSAGE_CHARACTERS else message[:199] + "…"


class _Limits:
    """What one walk over the node graph counts."""

    def __init__(self) -> None:
        self.aliases = 0
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) → (expanded values, height)
        self.open: set[int] = set()  # nodes on the path from the root: an alias to one recurses


def _check_graph(root: Node) -> None:
    limits = _Limits()
    size, _ = _measure(root, 1, limits, root)
    if size > MAX_YAML_NODES:
        raise _refused(root, f"the document has more than {MAX_YAML_NODES:,} values")


def _measure(node: Node, depth: int, limits: _Limits, parent: Node) -> tuple[int, int]:
    """(values in the expanded subtree, its nesting height); raises past any limit.

    An alias is the same node object met again; its own position is not kept by the composer,
    so problems with an alias point at the collection that holds it (``parent``).
    """
    key = id(node)
    if key in limits.open:
        raise _refused(parent, "an alias refers to a node that contains it (a recursive document)")
    known = limits.sizes.get(key)
    if known is not None:
        limits.aliases += 1
        if limits.aliases > MAX_YAML_ALIASES:
            raise _refused(parent, f"more than {MAX_YAML_ALIASES} aliases (*name)")
        if depth - 1 + known[1] > MAX_YAML_DEPTH:
            raise _refused(parent, f"nested more than {MAX_YAML_DEPTH} levels deep (via an alias)")
        return known
    if isinstance(node, ScalarNode):
        known = (1, 0)
    else:
        if depth > MAX_YAML_DEPTH:
            raise _refused(node, f"nested more than {MAX_YAML_DEPTH} levels deep")
        children: list[Node] = (
            [n for pair in node.value for n in pair]
            if isinstance(node, MappingNode)
            else list(node.value)
        )
        limits.open.add(key)
        size, height = 1, 1
        for child in children:
            child_size, child_height = _measure(child, depth + 1, limits, node)
            size += child_size
            height = max(height, child_height + 1)
            if size > MAX_YAML_NODES:
                expanded = " once its aliases are expanded" if limits.aliases else ""
                raise _refused(
                    node, f"the document has more than {MAX_YAML_NODES:,} values{expanded}"
                )
        limits.open.discard(key)
        known = (size, height)
    limits.sizes[key] = known
    return known


def _refused(node: Node, problem: str) -> YamlRefused:
    mark = node.start_mark
    return YamlRefused(f"line {mark.line + 1}, column {mark.column + 1}: {problem}")


class _Constructor(SafeConstructor):
    def __init__(self) -> None:
        super().__init__()
        self._keys_checked: set[int] = set()

    def flatten_mapping(self, node: MappingNode) -> None:
        # Checked before the first flatten: flattening rewrites node.value with the merged-in
        # pairs, which may repeat a key on purpose (an override of a merged default).
        if id(node) not in self._keys_checked:
            self._keys_checked.add(id(node))
            self._refuse_duplicate_keys(node)
        super().flatten_mapping(node)

    def _refuse_duplicate_keys(self, node: MappingNode) -> None:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not key_node:
                line = first.start_mark.line + 1
                raise ConstructorError(
                    None,
                    None,
                    f"the key {shown(key)} is given twice (first on line {line}); keys must be"
                    " unique",
                    key_node.start_mark,
                )

    def construct_bounded_int(self, node: ScalarNode) -> int:
        if len(node.value) > _MAX_INT_TEXT:
            raise ConstructorError(
                None, None, "an integer beyond 64 bits (-2^63 .. 2^63 - 1)", node.start_mark
            )
        value = super().construct_yaml_int(node)
        if value not in _INT64:
            raise ConstructorError(
                None,
                None,
                f"the integer {shown(value)} is beyond 64 bits (-2^63 .. 2^63 - 1)",
                node.start_mark,
            )
        return value


# The stubs type constructors for PyYAML's own loader classes only.
_Constructor.add_constructor(_INT_TAG, _Constructor.construct_bounded_int)  # type: ignore[type-var]


class _Resolver(BaseResolver):
    """YAML 1.1's implicit types as PyYAML's ``Resolver`` has them, without the traps."""


# Same as yaml.resolver.Resolver except: booleans are only true/false (not yes/no/on/off),
# and integers and floats have no base-60 form (1000:50 stays a string).
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_Resolver.add_implicit_resolver(
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver(_MERGE_TAG, re.compile(r"^(?:<<)$"), ["<"])
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?: ~ |null|Null|NULL | )$", re.X), ["~", "n", "N", ""]
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:timestamp",
    re.compile(
        r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
        (?:[Tt]|[ \t]+)[0-9][0-9]?
        :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
        re.X,
    ),
    list("0123456789"),
)
# `=` as the YAML 1.1 "value" key is left out: nothing in a spec uses it.


class _SpecLoader(CParser, _Constructor, _Resolver):
    def __init__(self, text: str) -> None:
        CParser.__init__(self, text)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
