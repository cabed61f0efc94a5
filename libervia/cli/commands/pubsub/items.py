"""``li pubsub get``, ``set`` and ``retract``: the items of a node."""

from __future__ import annotations

import sys

from libervia.cli.base import CommandError, Context, UsageError, add_command
from libervia.cli.commands.pubsub.common import (
    form_options,
    get_arguments,
    get_params,
    node_arguments,
    node_params,
    options_argument,
    render_done,
    render_items,
)

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


GET_EPILOG = """\
Without -M, -i nor -m, the service decides how many items it answers. When the
node is synchronised in the backend's cache, the cache answers (see -C).

examples:
  li pubsub get -s pubsub.example.org -n news -M 10
  li pubsub get -n urn:xmpp:microblog:0 -m 20 -b ''     # last page of 20 items
  li pubsub get -n urn:xmpp:microblog:0 -i first-post --output json
"""


SET_EPILOG = """\
The XML is an <item/> element, or only its payload (wrapped in an <item/> then), or
several of them one after the other: each is an item, all sent in one call to the
backend (which publishes them one after the other, in order: XEP-0060 allows one item
per publish request). With several items, give their ids in <item id="..."/>
elements: -i names one item.

examples:
  echo '<entry xmlns="http://www.w3.org/2005/Atom"><title>Hi</title></entry>' \\
      | li pubsub set -n urn:xmpp:microblog:0 -i hello
  li pubsub set -s pubsub.example.org -n news post.xml -O pubsub#access_model=open
  li pubsub set -n news items.xml     # <item id="a">...</item> <item id="b">...</item>
"""


def register(group: Any) -> None:
    """Add ``get``, ``set`` and ``retract`` to the ``li pubsub`` group."""
    parser = add_command(
        group, "get", run=get, render=render_items,
        help="get items of a node (from the cache when the node is synchronised)",
        epilog=GET_EPILOG,
    )
    node_arguments(parser)
    get_arguments(parser)
    parser.add_argument(
        "-C", "--no-cache", dest="use_cache", action="store_false",
        help="ask the service even if the node is in the cache",
    )

    parser = add_command(
        group, "set", run=publish, render=render_published,
        help="publish items (XML from standard input or a file)", epilog=SET_EPILOG,
    )
    node_arguments(parser)
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE",
        help="file holding the items' XML (default: - for standard input)",
    )
    parser.add_argument(
        "-i", "--item", metavar="ID",
        help="id of the item (default: the one in the XML, else chosen by the service); "
        "publishing with the id of an existing item replaces it",
    )
    options_argument(parser, "publish options (XEP-0060 §7.1.5)")

    parser = add_command(
        group, "retract", run=retract, render=render_done,
        help="retract (delete) items of a node",
    )
    node_arguments(parser)
    parser.add_argument(
        "-i", "--item", metavar="ID", dest="item_ids", action="append", required=True,
        help="id of an item to retract (repeatable)",
    )
    parser.add_argument(
        "--no-notify", dest="notify", action="store_false",
        help="don't ask the service to notify the subscribers",
    )


def get(ctx: Context) -> dict[str, Any]:
    return ctx.call("pubsub_get", **get_params(ctx), use_cache=ctx.args.use_cache)


def _read_item(ctx: Context) -> str:
    if ctx.args.file == "-":
        if sys.stdin.isatty():
            ctx.err.write("li: reading the items' XML from standard input "
                          "(Ctrl-D to end)\n")
        return sys.stdin.read()
    try:
        with open(ctx.args.file, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CommandError(f"can't read {ctx.args.file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{ctx.args.file} is not UTF-8 text") from None


def item_xml(text: str, item_id: str | None) -> str:
    """The XML to publish: ``text`` checked, its declaration dropped, ``item_id`` set.

    :raise CommandError: not well-formed XML, or two different ids
    """
    from libervia.cli.xml_format import XMLError, parse

    text = text.strip()
    if text.startswith("<?xml"):
        text = text[text.find("?>") + 2:].lstrip()
    if not text:
        raise CommandError("no XML given: the item is empty")
    try:
        root = parse(text)
    except XMLError as e:
        raise CommandError(f"the item is not well-formed XML: {e}") from None
    if item_id is None:
        return text
    from xml.sax.saxutils import quoteattr

    if root.name.rpartition(":")[2] != "item":
        return (f'<item xmlns="http://jabber.org/protocol/pubsub" id={quoteattr(item_id)}>'
                f"{text}</item>")
    attributes = dict(zip(root.attributes[::2], root.attributes[1::2], strict=True))
    if "id" in attributes:
        if attributes["id"] != item_id:
            raise CommandError(f"the <item/> has id {attributes['id']!r} and -i says "
                               f"{item_id!r}: give only one")
        return text
    # the text starts with the root's start tag ("<item" or "<prefix:item")
    split = 1 + len(root.name)
    return f"{text[:split]} id={quoteattr(item_id)}{text[split:]}"


def items_xml(text: str, item_id: str | None) -> list[str]:
    """The items to publish from ``text``: one element or several one after the other,
    each checked by :func:`item_xml`.

    :raise CommandError: not well-formed XML, nothing given, or ``item_id`` with
        several items
    """
    from libervia.cli.xml_format import XMLError, split_elements

    text = text.strip()
    if text.startswith("<?xml"):
        text = text[text.find("?>") + 2:].lstrip()
    try:
        elements = split_elements(text)
    except XMLError as e:
        raise CommandError(f"the items are not well-formed XML: {e}") from None
    if len(elements) > 1 and item_id is not None:
        raise UsageError(f"-i names one item, and {len(elements)} are given: give each "
                         'its id in an <item id="..."/> element instead')
    if not elements:
        raise CommandError("no XML given: the item is empty")
    return [item_xml(element, item_id) for element in elements]


def publish(ctx: Context) -> dict[str, Any]:
    xml = items_xml(_read_item(ctx), ctx.args.item)
    params = node_params(ctx)
    ids = ctx.call("pubsub_publish", **params, items=xml,
                   options=form_options(ctx.args.options))
    return {"service": params["service"], "node": params["node"], "item_ids": ids}


def render_published(ctx: Context, result: dict[str, Any]) -> None:
    ids = result.get("item_ids") or []
    if ids:
        ctx.out.write(f"published item{'s' if len(ids) > 1 else ''} {', '.join(ids)}\n")
    else:
        ctx.out.write("published\n")


def retract(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_retract", **node_params(ctx), item_ids=ctx.args.item_ids,
             notify=ctx.args.notify)
    return {"node": ctx.args.node, "retracted": ctx.args.item_ids}
