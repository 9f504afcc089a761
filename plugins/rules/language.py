"""The condition language of rules: parsed by lark (LALR) once, when the
configuration is loaded, into a tree of small nodes evaluated against a session.

No Python ``eval``: the grammar below is all there is. Names are checked at load
against the variables of the rule's event (:mod:`.variables`); list files are read
and regular expressions compiled at load, so a mistake is a configuration error,
never a surprise at the first message. docs/rules.md describes the language.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import frozen
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedInput, VisitError

from .lists import ListFileError, Matcher, read_list_file

GRAMMAR = r"""
?start: expr
?expr: and_expr | expr "or" and_expr -> or_
?and_expr: not_expr | and_expr "and" not_expr -> and_
?not_expr: "not" not_expr -> not_ | comparison
?comparison: operand
    | operand COMPARE operand -> compare
    | operand "in" operand -> in_
    | operand "not" "in" operand -> not_in
    | operand "matches" operand -> matches
    | operand "like" operand -> like
?operand: STRING -> string
    | NUMBER -> number
    | "true" -> true
    | "false" -> false
    | "[" [operand ("," operand)* ","?] "]" -> list_
    | NAME "(" [expr ("," expr)*] ")" -> call
    | NAME -> var
    | "(" expr ")"
COMPARE: "==" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_*?-]+)*/
STRING: /"(\\.|[^"\\])*"/ | /'[^']*'/
NUMBER: /-?\d+(\.\d+)?/
%import common.WS
%ignore WS
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


class RuleError(ValueError):
    """A condition or an action that cannot be compiled; the text says why."""


@frozen
class Scope:
    """What a condition may refer to: the rule's event and its variables (by name:
    a getter taking the evaluation environment)."""

    event: str
    lookup: Callable[[str], Callable[[Any], Any]]


# --- nodes ------------------------------------------------------------------------------
#
# Each node builds, once, ``fn``: a plain function of the evaluation environment
# (closures over its operands' own ``fn``), so evaluating a condition is a few
# function calls, not a walk of objects. The nodes stay for ``rules explain``.


class Node:
    """One part of a condition; ``text`` is its source, for ``rules explain``."""

    text = ""
    fn: Callable[[Any], Any]

    def __call__(self, env: Any) -> Any:
        return self.fn(env)

    def decided_by(self, env: Any) -> str:
        """The part of the condition that decided its value (itself by default)."""
        return self.text


class Const(Node):
    def __init__(self, value: Any) -> None:
        self.value = value
        self.fn = lambda env: value


class Var(Node):
    def __init__(self, getter: Callable[[Any], Any]) -> None:
        self.fn = getter


class And(Node):
    def __init__(self, left: Node, right: Node) -> None:
        self.left, self.right = left, right
        lf, rf = left.fn, right.fn
        self.fn = lambda env: bool(lf(env)) and bool(rf(env))

    def decided_by(self, env: Any) -> str:
        if not self.left(env):
            return self.left.decided_by(env)
        return self.right.decided_by(env) if not self.right(env) else self.text


class Or(Node):
    def __init__(self, left: Node, right: Node) -> None:
        self.left, self.right = left, right
        lf, rf = left.fn, right.fn
        self.fn = lambda env: bool(lf(env)) or bool(rf(env))

    def decided_by(self, env: Any) -> str:
        if self.left(env):
            return self.left.decided_by(env)
        return self.right.decided_by(env) if self.right(env) else self.text


class Not(Node):
    def __init__(self, inner: Node) -> None:
        inner_fn = inner.fn
        self.fn = lambda env: not inner_fn(env)


def _same(a: Any, b: Any) -> bool:
    """==: strings without regard to case (addresses, domains, names), numbers as
    numbers, anything else as Python compares it."""
    if a.__class__ is str and b.__class__ is str:
        return a.lower() == b.lower()
    return a == b


_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
          ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _is_number(value: Any) -> bool:
    return value.__class__ in (int, float)


class Compare(Node):
    def __init__(self, left: Node, op: str, right: Node) -> None:
        lf, rf = left.fn, right.fn
        if op in ("==", "!="):
            negate = op == "!="
            if isinstance(right, Const) and isinstance(right.value, str):
                const = right.value.lower()  # the common case: a variable and a text

                def equal(env: Any) -> bool:
                    value = lf(env)
                    return (value.__class__ is str and value.lower() == const) != negate
            else:
                def equal(env: Any) -> bool:
                    return _same(lf(env), rf(env)) != negate
            self.fn = equal
            return
        test = _ORDER[op]

        def order(env: Any) -> bool:
            a, b = lf(env), rf(env)
            if _is_number(a) and _is_number(b):
                return test(a, b)
            return a.__class__ is str and b.__class__ is str and test(a, b)

        self.fn = order


class In(Node):
    def __init__(self, left: Node, right: Node, negate: bool) -> None:
        lf, rf = left.fn, right.fn
        if isinstance(right, Const) and isinstance(right.value, Matcher):
            matcher = right.value
            self.fn = lambda env: (lf(env) in matcher) != negate
            return

        def contained(env: Any) -> bool:
            value, where = lf(env), rf(env)
            if isinstance(where, str):
                found = isinstance(value, str) and value.lower() in where.lower()
            elif isinstance(where, list | tuple | set | frozenset):
                found = any(_same(value, item) for item in where)
            else:
                found = False
            return found != negate

        self.fn = contained


class Pattern(Node):
    """``matches`` (a regular expression, searched) and ``like`` (a wildcard)."""

    def __init__(self, left: Node, pattern: re.Pattern) -> None:
        lf, search = left.fn, pattern.search

        def found(env: Any) -> bool:
            value = lf(env)
            return value.__class__ is str and search(value) is not None

        self.fn = found


class Call(Node):
    def __init__(self, fn: Callable[..., Any], args: list[Node], needs_env: bool) -> None:
        fns = [a.fn for a in args]
        if needs_env and len(args) == 1 and isinstance(args[0], Const):
            const = args[0].value  # header("Subject"): the usual form
            self.fn = lambda env: fn(env, const)
        elif needs_env:
            self.fn = lambda env: fn(env, *[f(env) for f in fns])
        elif len(fns) == 1:
            only = fns[0]
            self.fn = lambda env: fn(only(env))
        elif len(fns) == 2 and isinstance(args[1], Const):
            first, const = fns[0], args[1].value
            self.fn = lambda env: fn(first(env), const)
        else:
            self.fn = lambda env: fn(*[f(env) for f in fns])


# --- functions ---------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


#: name -> (function, number of arguments); string functions take any value.
FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    "lower": (lambda v: _text(v).lower(), 1),
    "upper": (lambda v: _text(v).upper(), 1),
    "len": (lambda v: len(v) if isinstance(v, list | tuple | str) else len(_text(v)), 1),
    "starts_with": (lambda v, p: _text(v).lower().startswith(_text(p).lower()), 2),
    "ends_with": (lambda v, p: _text(v).lower().endswith(_text(p).lower()), 2),
    "contains": (lambda v, p: _text(p).lower() in _text(v).lower(), 2),
    "domain": (lambda v: _text(v).rpartition("@")[2].lower(), 1),
    "local_part": (lambda v: _text(v).rpartition("@")[0], 1),
}
#: Functions of the message's header section: only at headers_received and message.
HEADER_FUNCTIONS = {
    "header": lambda env, name: (env.header_values(name) or [""])[0],
    "has_header": lambda env, name: bool(env.header_values(name)),
    "header_count": lambda env, name: len(env.header_values(name)),
}
HEADER_EVENTS = ("headers_received", "message")


# --- compiling -----------------------------------------------------------------------------


def _unquote(token: str) -> str:
    if token.startswith("'"):
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


@v_args(meta=True, inline=True)
class _Compiler(Transformer):
    def __init__(self, scope: Scope, source: str) -> None:
        super().__init__()
        self.scope, self.source = scope, source

    def _node(self, node: Node, meta: Any) -> Node:
        if not meta.empty:
            node.text = self.source[meta.start_pos:meta.end_pos]
        return node

    def string(self, meta, token):
        return self._node(Const(_unquote(str(token))), meta)

    def number(self, meta, token):
        text = str(token)
        return self._node(Const(float(text) if "." in text else int(text)), meta)

    def true(self, meta):
        return self._node(Const(True), meta)

    def false(self, meta):
        return self._node(Const(False), meta)

    def list_(self, meta, *items):
        items = [i for i in items if i is not None]
        if all(isinstance(i, Const) for i in items):
            values = [i.value for i in items]
            try:
                return self._node(Const(Matcher(values, "list")), meta)
            except ValueError as exc:
                raise RuleError(str(exc)) from None
        return self._node(Call(lambda *vs: list(vs), items, False), meta)

    def var(self, meta, name):
        return self._node(Var(self.scope.lookup(str(name))), meta)

    def call(self, meta, name, *args):
        name, args = str(name), [a for a in args if a is not None]
        if name == "file":
            if len(args) != 1 or not isinstance(args[0], Const) or not isinstance(
                    args[0].value, str):
                raise RuleError('file() takes one path in quotes: file("/etc/lists/x.txt")')
            path = Path(args[0].value)
            if not path.is_absolute():
                raise RuleError(f"file(): expected an absolute path (got {str(path)!r})")
            try:
                return self._node(Const(Matcher(read_list_file(path), str(path))), meta)
            except ListFileError as exc:
                raise RuleError(str(exc)) from None
            except ValueError as exc:
                raise RuleError(f"list file {str(path)!r}: {exc}") from None
        if name in HEADER_FUNCTIONS:
            if self.scope.event not in HEADER_EVENTS:
                raise RuleError(f"{name}() reads the message header, which exists only at "
                                f"events {', '.join(HEADER_EVENTS)} (the rule's event is "
                                f"{self.scope.event!r})")
            if len(args) != 1:
                raise RuleError(f"{name}() takes 1 argument (got {len(args)})")
            return self._node(Call(HEADER_FUNCTIONS[name], args, True), meta)
        if name not in FUNCTIONS:
            known = ", ".join(sorted([*FUNCTIONS, *HEADER_FUNCTIONS, "file"]))
            raise RuleError(f"unknown function {name}() (known: {known})")
        fn, count = FUNCTIONS[name]
        if len(args) != count:
            raise RuleError(f"{name}() takes {count} argument{'s' * (count > 1)} "
                            f"(got {len(args)})")
        return self._node(Call(fn, args, False), meta)

    def compare(self, meta, left, op, right):
        return self._node(Compare(left, str(op), right), meta)

    def in_(self, meta, left, right):
        return self._node(In(left, right, False), meta)

    def not_in(self, meta, left, right):
        return self._node(In(left, right, True), meta)

    def matches(self, meta, left, right):
        pattern = _constant_text(right, "matches")
        try:
            return self._node(Pattern(left, re.compile(pattern)), meta)
        except re.error as exc:
            raise RuleError(f"bad regular expression {pattern!r}: {exc}") from None

    def like(self, meta, left, right):
        pattern = _constant_text(right, "like")
        return self._node(Pattern(left, re.compile(fnmatch.translate(pattern),
                                                   re.IGNORECASE)), meta)

    def and_(self, meta, left, right):
        return self._node(And(left, right), meta)

    def or_(self, meta, left, right):
        return self._node(Or(left, right), meta)

    def not_(self, meta, inner):
        return self._node(Not(inner), meta)


def _constant_text(node: Node, op: str) -> str:
    if not isinstance(node, Const) or not isinstance(node.value, str):
        raise RuleError(f"{op} takes a pattern in quotes on its right")
    return node.value


def compile_condition(source: str, scope: Scope) -> Node:
    """The condition ``source`` as a node; an empty condition is always true."""
    if not source.strip():
        node: Node = Const(True)
        node.text = "(no condition)"
        return node
    try:
        tree = _PARSER.parse(source)
    except UnexpectedInput as exc:
        got = exc.token if isinstance(getattr(exc, "token", None), Token) else source[
            exc.pos_in_stream:exc.pos_in_stream + 10] if exc.pos_in_stream is not None else ""
        raise RuleError(f"syntax error at column {exc.column}: unexpected {str(got)!r}") from None
    except LarkError as exc:
        raise RuleError(f"syntax error: {exc}") from None
    try:
        node = _Compiler(scope, source).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, ValueError):
            raise RuleError(str(exc.orig_exc)) from None
        raise
    if isinstance(node, Token):  # cannot happen with this grammar; kept explicit
        raise RuleError(f"not a condition: {source!r}")
    return node


def expand(text: str, env: Any, lookup: Callable[[str], Callable[[Any], Any]]) -> str:
    """``#name#`` in a reply text or a value replaced by the variable's value."""
    return _TEMPLATE.sub(lambda m: _text(lookup(m.group(1))(env)), text)


_TEMPLATE = re.compile(r"#([A-Za-z_][A-Za-z0-9_.*?-]*)#")


def template_names(text: str) -> list[str]:
    """The variables a text refers to (checked at load)."""
    return _TEMPLATE.findall(text)
