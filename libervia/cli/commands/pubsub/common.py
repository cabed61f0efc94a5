"""What the ``li pubsub`` commands share: their arguments, the parameters they send,
and the rendering of items and of done actions."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import Context, add_profile_option, resolve_profile

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    import argparse
    from typing import Any


#: values of ``-o/--order-by`` of the commands getting items (XEP-0413)
ORDER_BY = ("creation", "modification")


# arguments


def service_arguments(parser: argparse.ArgumentParser) -> None:
    """``-p PROFILE`` and ``-s SERVICE``: the service a command works on."""
    add_profile_option(parser)
    parser.add_argument(
        "-s", "--service", metavar="SERVICE",
        help="JID of the pubsub service (default: the profile's own account, PEP)",
    )


def node_arguments(parser: argparse.ArgumentParser, node_required: bool = True,
                   node_help: str = "name of the node") -> None:
    """``-p PROFILE``, ``-s SERVICE`` and ``-n NODE``: the node a command works on."""
    service_arguments(parser)
    parser.add_argument("-n", "--node", metavar="NODE", required=node_required,
                        help=node_help)


def get_arguments(parser: argparse.ArgumentParser) -> None:
    """Which items to get: ``-M``, ``-i``, RSM paging (``-m``, ``-a``, ``-b``,
    ``--index``) and ``-o`` (see :func:`get_params`)."""
    parser.add_argument("-M", "--max-items", metavar="MAX", type=parse_count,
                        help="the last MAX published items")
    parser.add_argument("-i", "--item", metavar="ID", dest="item_ids", action="append",
                        help="only this item (repeatable)")
    parser.add_argument("-m", "--rsm-max", metavar="RSM_MAX", type=parse_count,
                        help="page size (RSM, XEP-0059)")
    page = parser.add_mutually_exclusive_group()
    page.add_argument("-a", "--after", metavar="ITEM",
                      help="the page after this item id (RSM cursor)")
    page.add_argument("-b", "--before", metavar="ITEM",
                      help="the page before this item id; '' for the last page")
    page.add_argument("--index", metavar="N", type=parse_count,
                      help="the page starting at the Nth item (from 0)")
    parser.add_argument("-o", "--order-by", choices=ORDER_BY,
                        help="order of the items (XEP-0413; default: the service's)")


def options_argument(parser: argparse.ArgumentParser, what: str,
                     required: bool = False) -> None:
    """``-O KEY=VALUE`` (repeatable): data form fields, read by :func:`form_options`."""
    parser.add_argument(
        "-O", "--option", metavar="KEY=VALUE", dest="options", action="append",
        type=parse_option, required=required,
        help=f"{what}: a data form field, e.g. pubsub#access_model=open "
        "(repeatable; a key given twice is a list)",
    )


def parse_count(value: str) -> int:
    """An argument that is a number of items, 0 or more."""
    import argparse

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def parse_option(value: str) -> tuple[str, str]:
    """A ``-O KEY=VALUE`` argument, as (key, value)."""
    import argparse

    key, sep, option_value = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key.strip(), option_value


# parameters sent to the backend


def form_options(pairs: list[tuple[str, str]] | None) -> dict[str, Any] | None:
    """The ``-O`` pairs as a data form's fields (a key given twice is a list)."""
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key in options:
            previous = options[key]
            options[key] = [*previous, value] if isinstance(previous, list) else [
                previous, value]
        else:
            options[key] = value
    return options


def node_params(ctx: Context) -> dict[str, Any]:
    """``profile``, ``service`` and ``node`` of a command with :func:`node_arguments`."""
    return {"profile": resolve_profile(ctx), "service": ctx.args.service,
            "node": ctx.args.node}


def get_params(ctx: Context) -> dict[str, Any]:
    """The parameters of ``pubsub_get`` and ``cache_get``, from :func:`get_arguments`."""
    args = ctx.args
    rsm = {key: value for key, value in (
        ("max", args.rsm_max), ("after", args.after), ("before", args.before),
        ("index", args.index)) if value is not None}
    params = node_params(ctx)
    params.update(max_items=args.max_items, item_ids=args.item_ids, rsm=rsm or None,
                  order_by=args.order_by)
    return params


# rendering

#: what a frontend says of a cached node that the cache does not keep up to date now
#: (the backend's ``freshness`` of a node: ``live``, ``unchecked`` or ``offline``)
FRESHNESS_NOTES = {
    "unchecked": "not checked since the profile connected: may be behind the service",
    "offline": "profile disconnected: may be behind the service",
}


def render_items(ctx: Context, result: dict[str, Any]) -> None:
    """Items, indented, then how many and where from (the service or the cache)."""
    from libervia.cli.xml_format import XMLError, indent

    for number, item in enumerate(result.get("items") or []):
        if number:
            ctx.out.write("\n")
        try:
            ctx.out.write(indent(item) + "\n")
        except XMLError:
            ctx.out.write(item + "\n")
    metadata = result.get("metadata") or {}
    count = len(result.get("items") or [])
    rsm = metadata.get("rsm") or {}
    about = [f"{count} item{'s' if count != 1 else ''}",
             "from the cache" if metadata.get("cached") else "from the service"]
    if metadata.get("cached") and metadata.get("freshness") in FRESHNESS_NOTES:
        about.append(FRESHNESS_NOTES[metadata["freshness"]])
    if rsm:
        about.append(", ".join(f"{key} {rsm[key]}" for key in
                               ("index", "count", "first", "last") if key in rsm))
    ctx.out.write(f"{chr(10) if count else ''}({'; '.join(about)})\n")


def render_done(ctx: Context, result: dict[str, Any]) -> None:
    """``node NODE: ACTION`` for a result ``{"node": NODE, ACTION: True}``."""
    done = [key for key in result if key != "node"]
    what = done[0] if done else "done"
    value = result.get(what)
    detail = f" {output.text(value)}" if value not in (True, None) else ""
    ctx.out.write(f"node {result.get('node')}: {what}{detail}\n")
