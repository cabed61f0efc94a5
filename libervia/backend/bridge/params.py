"""Parameters of bridge methods, checked against the type hints of the method.

When a method is registered, :func:`parameters_of` reads its signature and its type
hints (:func:`typing.get_type_hints`) and turns each parameter's hint into a checker;
a hint it can't check (no hint, a class it does not know, ``*args``...) makes the
registration fail at once, so that a plugin author learns it when the plugin loads, not
when a frontend first calls.  Every call is then checked before the method runs: an
unknown, missing or wrongly typed parameter is refused with
:class:`~libervia.backend.bridge.errors.InvalidParams` naming it.

The hints checked are those JSON values map to:

==========================================  =========================================
hint                                        accepted JSON value
==========================================  =========================================
``str``                                     a string
``int``                                     an integer (not ``true``, not ``1.0``)
``float``                                   a number (integer or not; not a boolean)
``bool``                                    ``true`` or ``false``
``None``                                    ``null``
``Literal["a", 2]``                         one of the values (strings, integers,
                                            booleans, null)
``list[X]`` (``list`` = ``list[Any]``)      an array whose every element is an X
``dict[str, X]`` (``dict`` = ``dict[str,    an object whose every value is an X
Any]``)
``X | Y``, ``Optional[X]``, ``Union``       an X or a Y
``Any``, ``object``                         any JSON value
==========================================  =========================================

Only the *type* is checked here: a value of the right type the method can't use (an
empty node name, a count too large for the database...) is the method's to refuse, with
an error of its own.
"""

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

from libervia.backend.bridge.errors import InvalidParams

#: characters of a name given by a frontend (parameter, object key) shown in messages
MAX_NAME = 64

#: values ``Literal[...]`` may hold
_LITERAL_TYPES = (str, int, bool, type(None))


class UncheckableSignature(TypeError):
    """A function can't be a bridge method: its parameters can't be checked."""


class Mismatch(Exception):
    """A value is not of the expected type; ``path`` says where inside it."""

    def __init__(self, expected: str, value: Any, path: str = "",
                 got: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.path = path
        #: what was given instead, for people (default: the value's JSON type)
        self.got = got if got is not None else json_type(value)


#: JSON names of the types of decoded values, most specific first (a bool is an int)
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (type(None), "null"), (bool, "a boolean"), (int, "an integer"), (float, "a number"),
    (str, "a string"), (list, "an array"), (dict, "an object"),
)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


class Checker:
    """Checks a decoded JSON value against one type hint."""

    #: what is expected, for people ("a string", "an array of strings"...)
    expected: str = ""

    def check(self, value: Any) -> None:
        """:raise Mismatch: ``value`` is not of the expected type"""
        raise NotImplementedError


class AnyChecker(Checker):
    expected = "any JSON value"

    def check(self, value: Any) -> None:
        pass


class ScalarChecker(Checker):
    def __init__(self, kind: type | None) -> None:
        self.kind = kind
        self.expected = {
            str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            None: "null",
        }[kind]

    def check(self, value: Any) -> None:
        kind = self.kind
        if kind is None:
            ok = value is None
        elif kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise Mismatch(self.expected, value)


class LiteralChecker(Checker):
    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values
        self.expected = "one of " + ", ".join(_json_literal(v) for v in values)

    def check(self, value: Any) -> None:
        # 1 == True == 1.0 in Python: compare the types too
        if not any(type(value) is type(v) and value == v for v in self.values):
            raise Mismatch(self.expected, value)


class ContainerChecker(Checker):
    """An array (``list[X]``) or an object (``dict[str, X]``) whose elements are Xs."""

    def __init__(self, kind: type[list] | type[dict], item: Checker) -> None:
        self.kind = kind
        self.item = item
        noun, link = ("an array", "of") if kind is list else ("an object", "whose values are")
        self.expected = (noun if isinstance(item, AnyChecker)
                         else f"{noun} {link} {_plural(item.expected)}")

    def check(self, value: Any) -> None:
        if not isinstance(value, self.kind):
            raise Mismatch(self.expected, value)
        elements = (enumerate(value) if self.kind is list
                    else ((_quoted(k), v) for k, v in value.items()))
        for label, element in elements:
            try:
                self.item.check(element)
            except Mismatch as e:
                raise Mismatch(e.expected, e.value, f"[{label}]{e.path}", e.got) from None


class UnionChecker(Checker):
    def __init__(self, options: list[Checker]) -> None:
        self.options = options
        self.expected = " or ".join(o.expected for o in options)

    def check(self, value: Any) -> None:
        mismatches = []
        for option in self.options:
            try:
                option.check(value)
                return
            except Mismatch as e:
                mismatches.append(e)
        # an array of the right kind holding one wrong element: say which element
        deepest = max(mismatches, key=lambda e: len(e.path))
        if deepest.path:
            raise deepest
        raise Mismatch(self.expected, value)


def _check_text(value: Any, path: str = "") -> None:
    """Refuse strings (values or keys, at any depth) that are not Unicode text.

    JSON can escape a lone surrogate (``"\\ud800"``), which is not a character:
    neither UTF-8 (the database, the logs) nor XML (stanzas) can carry it, so no
    method could use it.

    :raise Mismatch: with the path of the first such string
    """
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Mismatch("a string of Unicode characters", value, path,
                               "a string holding a lone surrogate") from None
    elif isinstance(value, list):
        for index, element in enumerate(value):
            _check_text(element, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, element in value.items():
            _check_text(key, f"{path}[{_quoted(key)}]")
            _check_text(element, f"{path}[{_quoted(key)}]")


def _json_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def _plural(expected: str) -> str:
    for article in ("an ", "a "):
        if expected.startswith(article):
            noun = expected[len(article):]
            head, sep, tail = noun.partition(" ")
            return f"{head}s{sep}{tail}"
    return expected


def checker_for(hint: Any) -> Checker:
    """The checker of a type hint.

    :raise UncheckableSignature: a hint JSON values can't be checked against
    """
    if hint is Any or hint is object:
        return AnyChecker()
    if hint is None or hint is type(None):
        return ScalarChecker(None)
    if hint in (str, int, float, bool):
        return ScalarChecker(hint)
    if hint is list:
        return ContainerChecker(list, AnyChecker())
    if hint is dict:
        return ContainerChecker(dict, AnyChecker())
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return checker_for(args[0])
    if origin in (Union, types.UnionType):
        return UnionChecker([checker_for(a) for a in args])
    if origin is Literal:
        if not all(isinstance(v, _LITERAL_TYPES) for v in args):
            raise UncheckableSignature(f"{hint!r}: Literal values must be strings, "
                                       "integers, booleans or None")
        return LiteralChecker(args)
    if origin is list and len(args) == 1:
        return ContainerChecker(list, checker_for(args[0]))
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise UncheckableSignature(f"{hint!r}: JSON object keys are strings, use "
                                       "dict[str, ...]")
        return ContainerChecker(dict, checker_for(args[1]))
    raise UncheckableSignature(
        f"{hint!r} can't be checked against JSON values: use str, int, float, bool, "
        "None, Literal[...], list[...], dict[str, ...], Any or unions of them"
    )


@dataclass(frozen=True)
class Parameter:
    """A parameter of a bridge method."""

    name: str
    checker: Checker
    required: bool
    #: the hint as written, for bridge_info and error messages
    hint: Any


@dataclass(frozen=True)
class Parameters:
    """The checked parameters of a bridge method.

    :param method: the method's name, for messages
    :param parameters: by name, in the order of the signature
    """

    method: str
    parameters: dict[str, Parameter]

    def check(self, params: dict[str, Any]) -> None:
        """Check a call's parameters (the ``params`` of the request).

        :raise InvalidParams: an unknown, missing or wrongly typed parameter, named in
            the message
        """
        unknown = [name for name in params if name not in self.parameters]
        if unknown:
            expected = ", ".join(self.parameters) or "none"
            raise InvalidParams(
                f"{self.method}: unknown parameter {_names(unknown)} (parameters: "
                f"{expected})"
            )
        missing = [p.name for p in self.parameters.values()
                   if p.required and p.name not in params]
        if missing:
            raise InvalidParams(f"{self.method}: missing parameter {_names(missing)}")
        for name, value in params.items():
            try:
                self.parameters[name].checker.check(value)
                _check_text(value)
            except Mismatch as e:
                where = f'"{name}"{e.path}'
                if e.path:
                    message = (f"{self.method}: {where} (in parameter \"{name}\") must be "
                               f"{e.expected}, not {e.got}")
                else:
                    message = (f"{self.method}: parameter {where} must be {e.expected}, "
                               f"not {e.got}")
                raise InvalidParams(message) from None


def _quoted(name: str) -> str:
    """A name a frontend gave, for a message: escaped, and cut when long."""
    text = ascii(name)[1:-1]
    return f'"{text[:MAX_NAME]}..."' if len(text) > MAX_NAME else f'"{text}"'


def _names(names: list[str]) -> str:
    shown = ", ".join(_quoted(n) for n in names[:5])
    return shown + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")


def parameters_of(method: str, func: Callable[..., Any],
                  reserved: frozenset[str] = frozenset()) -> Parameters:
    """Read the parameters of ``func`` from its signature and type hints.

    :param method: the bridge method's name, for messages
    :param reserved: parameters the bridge passes itself (``connection``): not
        checked, not accepted from frontends
    :raise UncheckableSignature: a parameter without type hint, with a hint that can't
        be checked, positional only or variadic, or hints that can't be resolved
    """
    def refuse(why: str) -> UncheckableSignature:
        return UncheckableSignature(
            f"bridge method {method!r} ({getattr(func, '__qualname__', func)!r}): {why}"
        )

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as e:
        raise refuse(f"its signature can't be read ({e})") from None
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as e:
        raise refuse(f"its type hints can't be resolved ({type(e).__name__}: {e}); "
                     "import at run time the names they use") from None
    parameters: dict[str, Parameter] = {}
    for name, param in signature.parameters.items():
        if name in reserved:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise refuse(f"*{name} or **{name} can't be checked: declare each parameter")
        if param.kind is param.POSITIONAL_ONLY:
            raise refuse(f"parameter {name!r} is positional only; frontends pass "
                         "parameters by name")
        if name not in hints:
            raise refuse(f"parameter {name!r} has no type hint")
        try:
            checker = checker_for(hints[name])
        except UncheckableSignature as e:
            raise refuse(f"parameter {name!r}: {e}") from None
        parameters[name] = Parameter(name=name, checker=checker,
                                     required=param.default is param.empty,
                                     hint=hints[name])
    return Parameters(method=method, parameters=parameters)
