"""XEP-0059: Result Set Management (RSM).

RSM pages long result sets (pubsub items, archives...).  This plugin parses and builds
the ``<set xmlns='http://jabber.org/protocol/rsm'/>`` element of requests and answers,
and offers helpers other plugins use to page through results.

Servers differ (see the pubsub cache documentation): some page without advertising RSM,
some ignore RSM and answer with everything.  :meth:`RSMResponse.is_complete_page`-style
decisions are therefore made from the answer, never from service discovery alone.
"""

from dataclasses import dataclass
from typing import Any

from twisted.words.xish import domish

from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Host

NS_RSM = "http://jabber.org/protocol/rsm"

PLUGIN_INFO = {
    "name": "Result Set Management",
    "import_name": "XEP-0059",
    "type": C.PLUG_TYPE_XEP,
    "modes": list(C.PLUG_MODE_BOTH),
    "protocols": ["XEP-0059"],
    "dependencies": [],
    "recommendations": [],
    "main": "XEP_0059",
    "handler": False,
    "description": "Result Set Management: paging of long result sets.",
}


class RSMError(ValueError):
    """An RSM element or parameter is invalid."""


def _child(parent: domish.Element, name: str) -> domish.Element | None:
    for elt in parent.elements(NS_RSM, name):
        return elt
    return None


def _non_negative(value: str | int | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RSMError(f"RSM {what} must be an integer, not {value!r}") from None
    if number < 0:
        raise RSMError(f"RSM {what} must not be negative ({number})")
    return number


@dataclass(frozen=True)
class RSMRequest:
    """Parameters of a paged request.

    ``after`` and ``before`` are item UIDs (``before=""`` asks for the last page);
    ``index`` jumps to a position.  At most one of them may be set.
    """

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        _non_negative(self.max, "max")
        _non_negative(self.index, "index")
        given = [n for n in ("after", "before", "index") if getattr(self, n) is not None]
        if len(given) > 1:
            raise RSMError(f"RSM: only one of after, before or index may be used ({given})")

    @classmethod
    def from_element(cls, set_elt: domish.Element) -> "RSMRequest":
        """Parse a request ``<set/>`` element."""
        max_elt = _child(set_elt, "max")
        after_elt = _child(set_elt, "after")
        before_elt = _child(set_elt, "before")
        index_elt = _child(set_elt, "index")
        return cls(
            max=_non_negative(str(max_elt), "max") if max_elt is not None else None,
            after=str(after_elt) if after_elt is not None else None,
            before=str(before_elt) if before_elt is not None else None,
            index=_non_negative(str(index_elt), "index") if index_elt is not None else None,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RSMRequest":
        """Build from API parameters (``max``, ``after``, ``before``, ``index``)."""
        unknown = set(data) - {"max", "after", "before", "index"}
        if unknown:
            raise RSMError(f"unknown RSM parameter(s): {', '.join(sorted(unknown))}")
        return cls(
            max=_non_negative(data.get("max"), "max"),
            after=data.get("after"),
            before=data.get("before"),
            index=_non_negative(data.get("index"), "index"),
        )

    def to_element(self) -> domish.Element:
        """Build the ``<set/>`` element to put in a request."""
        set_elt = domish.Element((NS_RSM, "set"))
        if self.max is not None:
            set_elt.addElement("max", content=str(self.max))
        if self.index is not None:
            set_elt.addElement("index", content=str(self.index))
        if self.before is not None:
            if self.before:
                set_elt.addElement("before", content=self.before)
            else:
                set_elt.addElement("before")
        if self.after is not None:
            set_elt.addElement("after", content=self.after)
        return set_elt


@dataclass(frozen=True)
class RSMResponse:
    """What an answer says about the page it holds."""

    first: str | None = None
    last: str | None = None
    #: index of the first item of the page in the whole set
    index: int | None = None
    #: number of items in the whole set
    count: int | None = None

    @classmethod
    def from_element(cls, set_elt: domish.Element) -> "RSMResponse":
        first_elt = _child(set_elt, "first")
        last_elt = _child(set_elt, "last")
        count_elt = _child(set_elt, "count")
        index = None
        if first_elt is not None and first_elt.hasAttribute("index"):
            index = _non_negative(first_elt["index"], "first index")
        return cls(
            first=str(first_elt) if first_elt is not None else None,
            last=str(last_elt) if last_elt is not None else None,
            index=index,
            count=_non_negative(str(count_elt), "count") if count_elt is not None else None,
        )

    def to_element(self) -> domish.Element:
        set_elt = domish.Element((NS_RSM, "set"))
        if self.first is not None:
            first_elt = set_elt.addElement("first", content=self.first)
            if self.index is not None:
                first_elt["index"] = str(self.index)
        if self.last is not None:
            set_elt.addElement("last", content=self.last)
        if self.count is not None:
            set_elt.addElement("count", content=str(self.count))
        return set_elt

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("first", self.first), ("last", self.last),
                                  ("index", self.index), ("count", self.count))
                if v is not None}


def find_set(parent: domish.Element) -> domish.Element | None:
    """Return the RSM ``<set/>`` child of ``parent``, if any."""
    for elt in parent.elements(NS_RSM, "set"):
        return elt
    return None


class XEP_0059:  # noqa: N801 (plugin classes are named after their protocol)
    """RSM helpers, reachable as ``host.plugins["XEP-0059"]``."""

    namespace = NS_RSM

    def __init__(self, host: Host) -> None:
        self.host = host

    request_from_dict = staticmethod(RSMRequest.from_dict)
    parse_request = staticmethod(RSMRequest.from_element)
    parse_response = staticmethod(RSMResponse.from_element)
    find_set = staticmethod(find_set)

    def next_request(
        self, request: RSMRequest, response: RSMResponse, received: int
    ) -> RSMRequest | None:
        """Request for the page after ``response``, or ``None`` when the set is done.

        :param received: number of items in the answer
        The decision comes from the answer: no ``last``, an empty page, or a count
        already reached ends the paging (a server ignoring RSM answers everything at
        once, without a ``<set/>``, which ends it too).
        """
        if received == 0 or response.last is None:
            return None
        if response.count is not None and response.index is not None:
            if response.index + received >= response.count:
                return None
        return RSMRequest(max=request.max, after=response.last)
