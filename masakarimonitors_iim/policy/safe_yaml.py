"""The policy file's YAML turned into plain values, within fixed bounds.

PyYAML's SafeLoader runs no code, but it does not bound what a small file
can cost, and the policy file is re-read on SIGHUP by a running monitor:

* aliases share one node, so 400 bytes of nested aliases make a value
  that is small in memory but prints (``%r`` in an error message),
  compares or serialises as hundreds of millions of items;
* an alias may point into the node that contains it (a cycle);
* the composer recurses once per level of nesting, so deep nesting ends
  in RecursionError instead of a message;
* ``!!set``, ``!!binary``, ``!!omap`` and the like build types no policy
  field takes, which then fail in odd places;
* huge integers (Python refuses to print one of more than 4300 digits),
  impossible dates and ``!!bool maybe`` raise ValueError or KeyError from
  inside the constructor.

So the file is first composed into nodes with the nesting depth capped,
then the node graph is measured with aliases expanded (every node and
every character counted once per path that reaches it) and its tags
checked, and only then built into Python values, with the constructors
that can fail on a bad scalar turned into YAML errors. Every problem
comes out as :class:`YamlProblem`, one line naming the place in the file.
"""
from __future__ import annotations

from typing import Any, Callable

import yaml

from masakarimonitors_iim.common.text import one_line

#: Levels of nesting allowed; a policy needs about eight.
MAX_DEPTH = 32
#: Nodes plus scalar characters, aliases expanded. A file without aliases
#: weighs less than twice its size, so any file under the loader's 1 MiB
#: limit passes; aliases may expand it to at most this.
MAX_WEIGHT = 4 * 1024 * 1024
#: Characters of one integer or float: enough for any real setting, and
#: far below the 4300 digits Python refuses to print.
MAX_NUMBER_CHARS = 32

_TAG = "tag:yaml.org,2002:"
#: Plain scalars, lists and mappings (and ``<<`` merge keys). Timestamps
#: stay allowed so an unquoted date gets the loader's "quote it" message.
ALLOWED_TAGS = frozenset(_TAG + t for t in (
    "str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp"))


class YamlProblem(Exception):
    """The file cannot be read as the policy's YAML; one line."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with a nesting cap, and refusing duplicate keys: YAML
    keeps the last one silently, which turns a copy-paste slip into a
    wrong policy."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, "nested deeper than %d levels" % MAX_DEPTH,
                self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %s" % one_line(repr(key), 80), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


def _guarded(kind: str, construct: Callable[[Any, Any], Any],
             max_chars: int | None = None) -> Callable[[Any, Any], Any]:
    """A scalar constructor whose ValueError / KeyError / OverflowError (a
    bad ``!!int``, an impossible date, ``!!bool maybe``) becomes a YAML
    error at the scalar's line."""

    def construct_checked(loader: StrictLoader, node: yaml.ScalarNode) -> Any:
        shown = one_line(repr(node.value), 40)
        if max_chars is not None and len(str(node.value)) > max_chars:
            raise yaml.constructor.ConstructorError(
                None, None, "%s %s is longer than %d characters" % (kind, shown, max_chars),
                node.start_mark)
        try:
            return construct(loader, node)
        except (ValueError, KeyError, OverflowError) as err:
            raise yaml.constructor.ConstructorError(
                None, None, "%s is not a valid %s (%s)" % (shown, kind, one_line(err, 80)),
                node.start_mark) from None
    return construct_checked


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                             _construct_mapping)
for _kind, _name, _cap in (("number", "int", MAX_NUMBER_CHARS),
                           ("number", "float", MAX_NUMBER_CHARS),
                           ("boolean", "bool", None), ("date", "timestamp", None)):
    StrictLoader.add_constructor(_TAG + _name, _guarded(
        _kind, yaml.SafeLoader.yaml_constructors[_TAG + _name], _cap))


def read(text: str) -> Any:
    """The one YAML document in ``text`` as plain Python values (None for
    an empty document); :class:`YamlProblem` for anything else."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_bounds(node)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise YamlProblem("not valid YAML: %s" % _problem(err)) from None
    except RecursionError:
        # Only if a bound above is wrong: still one line, not a traceback.
        raise YamlProblem("not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def check_bounds(root: yaml.Node) -> None:
    """Refuse cycles, unsupported tags, and a graph whose depth or weight
    with aliases expanded exceeds the limits. Linear in the number of
    distinct nodes: each is measured once and its result reused."""
    weight: dict[int, int] = {}
    depth: dict[int, int] = {}
    entered: set[int] = set()          # on the path from the root: a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        children = _children(node)
        if leaving:
            entered.discard(key)
            if isinstance(node, yaml.ScalarNode):
                weight[key] = 1 + len(node.value)
            else:
                weight[key] = 1 + sum(weight[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if weight[key] > MAX_WEIGHT:
                raise YamlProblem(
                    "the YAML expands to more than %d nodes and characters (aliases "
                    "repeat what they point to) at line %d; write it out without "
                    "nested aliases" % (MAX_WEIGHT, node.start_mark.line + 1))
            if depth[key] > MAX_DEPTH:
                raise YamlProblem("the YAML is nested deeper than %d levels (aliases "
                                  "included) at line %d"
                                  % (MAX_DEPTH, node.start_mark.line + 1))
            continue
        if key in weight:
            continue
        if key in entered:
            raise YamlProblem("an alias at or after line %d points into the node that "
                              "contains it; remove the cycle" % (node.start_mark.line + 1))
        if node.tag not in ALLOWED_TAGS:
            raise YamlProblem("YAML tag %s at line %d is not supported; use plain "
                              "strings, numbers, booleans, lists and mappings"
                              % (_short_tag(node.tag), node.start_mark.line + 1))
        entered.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in weight)


def _short_tag(tag: str) -> str:
    """``!!set`` as the file spells it, not ``tag:yaml.org,2002:set``."""
    return one_line("!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag, 60)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or (str(err).splitlines() or ["?"])[0]
    problem = one_line(problem, 200)
    if mark is not None:
        return "%s at line %d, column %d" % (problem, mark.line + 1, mark.column + 1)
    return problem
