"""``li roster``: the profile's contacts, and the subscription requests to answer."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import Context, add_command, add_group, add_profile_option, resolve_profile
from libervia.cli.commands.presence import describe

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any

#: what a subscription means, for people
SUBSCRIPTIONS = {"both": "both ways", "to": "you see them", "from": "they see you",
                 "none": "none"}


def _command(group: Any, name: str, run: Any, help: str, render: Any = None,
             description: str | None = None, jid: str | None = None,
             aliases: tuple[str, ...] = ()) -> Any:
    parser = add_command(group, name, run=run, render=render, help=help,
                         description=description, aliases=aliases)
    add_profile_option(parser)
    if jid is not None:
        parser.add_argument("jid", metavar="JID", help=jid)
    return parser


def register(subparsers: Any) -> None:
    group = add_group(subparsers, "roster", help="contacts and subscription requests")
    _command(group, "list", roster_list, render=render_list, aliases=("ls",),
             help="list the contacts",
             description="List the profile's contacts: name, groups, subscription (who "
             "sees whose presence) and presence. Works offline, from the stored roster.")
    parser = _command(group, "add", roster_add, render=render_item,
                      help="add a contact and ask to see its presence",
                      jid="the contact's bare JID")
    parser.add_argument("--name", metavar="N", help="a name for the contact")
    parser.add_argument("--group", metavar="G", action="append", dest="groups",
                        help="a group of the contact (repeatable)")
    parser = _command(group, "update", roster_update, render=render_updated,
                      help="change a contact's name or groups",
                      description="Change the name or the groups of a contact of the "
                      "roster; what is not given is kept. --name '' removes the name, "
                      "--no-groups every group.",
                      jid="the contact's bare JID")
    parser.add_argument("--name", metavar="N", help="the contact's new name")
    groups = parser.add_mutually_exclusive_group()
    groups.add_argument("--group", metavar="G", action="append", dest="groups",
                        help="a group of the contact (repeatable): replaces its groups")
    groups.add_argument("--no-groups", action="store_const", const=[], dest="groups",
                        help="remove the contact from every group")
    _command(group, "remove", roster_remove, render=render_done("removed"),
             help="remove a contact (both subscriptions are cancelled)",
             jid="the contact's bare JID")
    _command(group, "pending", roster_pending, render=render_pending,
             help="list the subscription requests waiting for an answer",
             description="List the contacts asking to see the profile's presence, "
             "oldest first; answer with accept or deny. Kept across restarts.")
    _command(group, "accept", roster_accept, render=render_done("accepted"),
             help="let a contact see the profile's presence",
             description="Accept a subscription request: the contact sees the "
             "profile's presence from now on (roster add asks for the other way).",
             jid="the contact's bare JID")
    _command(group, "deny", roster_deny, render=render_done("denied"),
             help="refuse a subscription request", jid="the contact's bare JID")


def roster_list(ctx: Context) -> list[dict[str, Any]]:
    return ctx.call("roster_get", profile=resolve_profile(ctx))


def roster_add(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    return ctx.call("roster_add", profile=resolve_profile(ctx), jid=args.jid,
                    name=args.name, groups=args.groups or [])


def roster_update(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    # None: kept as it is
    return ctx.call("roster_update", profile=resolve_profile(ctx), jid=args.jid,
                    name=args.name, groups=args.groups)


def roster_remove(ctx: Context) -> None:
    return ctx.call("roster_remove", profile=resolve_profile(ctx), jid=ctx.args.jid)


def roster_pending(ctx: Context) -> list[dict[str, Any]]:
    return ctx.call("subscription_pending", profile=resolve_profile(ctx))


def roster_accept(ctx: Context) -> None:
    return ctx.call("subscription_answer", profile=resolve_profile(ctx),
                    jid=ctx.args.jid, accept=True)


def roster_deny(ctx: Context) -> None:
    return ctx.call("subscription_answer", profile=resolve_profile(ctx),
                    jid=ctx.args.jid, accept=False)


def subscription_text(item: dict[str, Any]) -> str:
    text = SUBSCRIPTIONS.get(item.get("subscription"), str(item.get("subscription")))
    if item.get("ask"):
        text += ", asked"
    return text


def render_list(ctx: Context, items: list[dict[str, Any]]) -> None:
    rows = [{"jid": i.get("jid"), "name": i.get("name") or "",
             "groups": ", ".join(i.get("groups") or []),
             "subscription": subscription_text(i),
             "presence": describe(i["presence"]) if i.get("presence") else "unavailable"}
            for i in items]
    output.print_table(rows, [("jid", "JID"), ("name", "NAME"), ("groups", "GROUPS"),
                              ("subscription", "SUBSCRIPTION"),
                              ("presence", "PRESENCE")], ctx.out, empty="(no contact)")


def render_item(ctx: Context, item: dict[str, Any]) -> None:
    asked = item.get("subscription") in ("none", "from")
    ctx.out.write(f"{item.get('jid')} added; subscription: {subscription_text(item)}"
                  f"{'; a subscription request was sent' if asked else ''}\n")


def render_updated(ctx: Context, item: dict[str, Any]) -> None:
    groups = ", ".join(item.get("groups") or []) or "(none)"
    ctx.out.write(f"{item.get('jid')} updated; name: {item.get('name') or '(none)'}; "
                  f"groups: {groups}\n")


def render_done(what: str) -> Any:
    def render(ctx: Context, result: Any) -> None:
        ctx.out.write(f"{ctx.args.jid} {what}\n")
    return render


def render_pending(ctx: Context, requests: list[dict[str, Any]]) -> None:
    output.print_table(requests, [("jid", "JID"), ("received", "RECEIVED"),
                                  ("status", "MESSAGE")], ctx.out,
                       empty="(no request waiting)")
