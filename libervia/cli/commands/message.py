"""``li message``: send messages, read the history, watch messages as they come."""

from __future__ import annotations

from libervia.cli.base import (
    STREAMED,
    CommandError,
    Context,
    add_command,
    add_group,
    add_profile_option,
    resolve_profile,
    watch_signals,
)

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any

#: the bridge signal of new messages
MESSAGE_SIGNAL = "message_new"
#: the largest page the backend gives
MAX_PAGE = 1000

HISTORY_EPILOG = """\
Messages are shown oldest first, one line each: time (UTC), direction (> sent,
< received), contact, text. --output json gives each message whole, with its uid, to
page with --before UID (older) and --after UID (newer). Dates are ISO 8601
(2026-12-08, 2026-12-08T10:00:00+01:00; UTC when no zone is given). The history is
read from the backend's database: it works while the profile is offline.

examples:
  li message history bob@example.org -M 20
  li message history -f "train ticket"
  li message history bob@example.org --since 2026-12-01 --output json
"""

WATCH_EPILOG = """\
In text, each message is a line (time, direction, contact, text); with --output json,
each is one JSON object on one line (JSON lines): profile, via (sent, live, carbon) and the
message as history_get gives it. Ctrl-C stops watching (exit status 0).
"""


def _count(value: str) -> int:
    import argparse

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 1 <= number <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_PAGE}")
    return number


def register(subparsers: Any) -> None:
    group = add_group(subparsers, "message", help="send messages, read the history")
    parser = add_command(group, "send", run=message_send, render=render_uid,
                         help="send a message (the text from standard input when not "
                              "given); print its uid")
    add_profile_option(parser)
    parser.add_argument("jid", metavar="JID", help="the recipient")
    parser.add_argument("text", metavar="TEXT", nargs="?",
                        help="the message (default: read from standard input)")
    parser.add_argument("--subject", metavar="S", help="a subject")
    parser.add_argument("--thread", metavar="T", help="the conversation thread")
    parser.add_argument("--type", choices=("chat", "normal", "headline"),
                        dest="message_type", help="the message type (default: chat)")
    parser = add_command(group, "history", run=message_history, render=render_history,
                         help="show the messages sent and received", epilog=HISTORY_EPILOG)
    add_profile_option(parser)
    parser.add_argument("jid", metavar="JID", nargs="?",
                        help="only the conversation with this contact")
    parser.add_argument("-M", "--max", metavar="N", type=_count, default=50,
                        help="the N latest messages (default: 50)")
    parser.add_argument("--before", metavar="UID", help="only messages older than UID")
    parser.add_argument("--after", metavar="UID", help="only messages newer than UID")
    parser.add_argument("--since", metavar="DATE", help="only messages from DATE on")
    parser.add_argument("--until", metavar="DATE", help="only messages before DATE")
    parser.add_argument("-f", "--find", metavar="WORDS",
                        help="only messages whose text holds every one of these words")
    parser = add_command(group, "watch", run=message_watch,
                         help="print the messages as they come (until Ctrl-C)",
                         epilog=WATCH_EPILOG)
    add_profile_option(parser)
    parser.add_argument("jid", metavar="JID", nargs="?",
                        help="only the conversation with this contact")


def message_send(ctx: Context) -> str:
    import sys

    args = ctx.args
    text = args.text
    if text is None:
        if sys.stdin.isatty():
            ctx.err.write("li: type the message, then Ctrl-D\n")
            ctx.err.flush()
        text = sys.stdin.read()
        # the newline that ends what was typed or piped is not part of the message
        if text.endswith("\n"):
            text = text[:-1]
    if not text and not args.subject:
        raise CommandError("nothing to send: give a TEXT (or pipe one)")
    params: dict[str, Any] = {"profile": resolve_profile(ctx), "to": args.jid,
                              "body": text or None}
    for name, value in (("subject", args.subject), ("thread", args.thread),
                        ("type", args.message_type)):
        if value is not None:
            params[name] = value
    return ctx.call("message_send", **params)


def render_uid(ctx: Context, uid: str) -> None:
    ctx.out.write(f"{uid}\n")


def message_history(ctx: Context) -> list[dict[str, Any]]:
    args = ctx.args
    params: dict[str, Any] = {"profile": resolve_profile(ctx), "limit": args.max}
    for name, value in (("with_jid", args.jid), ("before", args.before),
                        ("after", args.after), ("since", args.since),
                        ("until", args.until), ("search", args.find)):
        if value is not None:
            params[name] = value
    if args.after is not None and args.before is None:
        # the messages just after UID: oldest first
        params["order"] = "asc"
        return ctx.call("history_get", **params)["messages"]
    return list(reversed(ctx.call("history_get", **params)["messages"]))


def line(message: dict[str, Any]) -> str:
    """A message for people: ``2026-12-08 10:00  > bob@example.org: text``."""
    stamp = str(message.get("timestamp") or "")[:19].replace("T", " ")
    arrow = ">" if message.get("direction") == "out" else "<"
    text = message.get("body")
    if text is None:
        text = f"[{message.get('subject')}]" if message.get("subject") else ""
    lines = str(text).splitlines() or [""]
    more = "".join(f"\n{' ' * 22}{extra}" for extra in lines[1:])
    flags = " (cut)" if (message.get("extra") or {}).get("truncated") else ""
    return f"{stamp}  {arrow} {message.get('with')}: {lines[0]}{more}{flags}"


def render_history(ctx: Context, messages: list[dict[str, Any]]) -> None:
    if not messages:
        ctx.out.write("(no message)\n")
        return
    for message in messages:
        ctx.out.write(line(message) + "\n")


def message_watch(ctx: Context) -> Any:
    profile = resolve_profile(ctx)
    wanted = ctx.args.jid.split("/")[0].lower() if ctx.args.jid else None

    def handle(params: dict[str, Any]) -> None:
        message = params.get("message")
        if not isinstance(message, dict) or (
                wanted is not None and str(message.get("with")).lower() != wanted):
            return
        if ctx.json:
            import json

            ctx.out.write(json.dumps({"profile": profile, "via": params.get("via"),
                                      **message}, ensure_ascii=False,
                                     separators=(",", ":")) + "\n")
        else:
            ctx.out.write(line(message) + "\n")
        ctx.out.flush()

    watch_signals(ctx, profile, MESSAGE_SIGNAL, handle, "message", "messages")
    return STREAMED
