"""XEP-0277: the blog analyser and the Atom entry parser, on real-world-looking items."""

import json

import pytest
import pytest_twisted
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.plugins.plugin_xep_0277 import XEP_0277, parse_entry
from tests.unit.plugins.cache_env import Host

ITEM = "<item xmlns='http://jabber.org/protocol/pubsub' id='{id}'>{entry}</item>"

# as Movim publishes: xhtml content, a link to the comments node
MOVIM_ENTRY = """<entry xmlns='http://www.w3.org/2005/Atom'>
  <title>Release of the 0.22 version</title>
  <author><name>Timothée</name><uri>xmpp:edhelas@movim.eu</uri></author>
  <link rel='alternate' href='xmpp:edhelas@movim.eu?;node=urn:xmpp:microblog:0;item=rel'/>
  <link rel='replies' title='comments'
        href='xmpp:pubsub.movim.eu?;node=urn:xmpp:microblog:0:comments/rel'/>
  <content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><p>Hello
    <b>everyone</b>,</p><p>the new&#160;version is <a href='https://movim.eu'>out</a>
    &amp; ready.</p></div></content>
  <category term='movim'/><category term='release'/><category term='movim'/>
  <published>2023-05-02T10:00:00Z</published>
  <updated>2023-05-02T12:30:15.250+02:00</updated>
  <id>tag:movim.eu,2023:rel</id>
</entry>"""

# as Libervia publishes: text content and an escaped-HTML summary-less entry
LIBERVIA_ENTRY = """<entry xmlns='http://www.w3.org/2005/Atom'>
  <title type='text'>Some thoughts</title>
  <content type='html'>&lt;p&gt;First &lt;em&gt;line&lt;/em&gt;&lt;/p&gt;&lt;script&gt;evil()
  &lt;/script&gt;&lt;p&gt;Second line&lt;/p&gt;</content>
  <author><name>Louise</name></author>
  <published>2024-01-31T23:59:59+01:00</published>
  <updated>2024-02-01T00:00:00Z</updated>
  <id>xmpp:louise@example.org?;node=urn%3Axmpp%3Amicroblog%3A0;item=thoughts</id>
</entry>"""


def parse(entry: str, item_id: str = "x"):
    return parse_entry(parse_xml(ITEM.format(id=item_id, entry=entry)))


def test_movim_entry_with_xhtml_content():
    data = parse(MOVIM_ENTRY)
    assert data["title"] == "Release of the 0.22 version"
    # white space (no-break spaces too) collapsed
    assert data["content"] == "Hello everyone, the new version is out & ready."
    assert data["published"] == "2023-05-02T10:00:00+00:00"
    assert data["updated"] == "2023-05-02T10:30:15.250000+00:00"
    assert data["author"] == {"name": "Timothée", "uri": "xmpp:edhelas@movim.eu",
                              "jid": "edhelas@movim.eu"}
    assert data["categories"] == ["movim", "release"]
    assert data["links"] == [
        {"href": "xmpp:edhelas@movim.eu?;node=urn:xmpp:microblog:0;item=rel",
         "rel": "alternate"},
        {"href": "xmpp:pubsub.movim.eu?;node=urn:xmpp:microblog:0:comments/rel",
         "rel": "replies"}]
    assert data["id"] == "tag:movim.eu,2023:rel"
    json.dumps(data)  # what the cache stores must be JSON


def test_libervia_entry_with_html_content():
    data = parse(LIBERVIA_ENTRY)
    assert data["title"] == "Some thoughts"
    # tags and scripts removed, words kept apart
    assert data["content"] == "First line Second line"
    assert data["published"] == "2024-01-31T22:59:59+00:00"
    assert data["author"] == {"name": "Louise", "uri": None, "jid": None}
    assert data["categories"] == [] and data["links"] == []


def test_minimal_entry_and_summary_as_content():
    data = parse("<entry xmlns='http://www.w3.org/2005/Atom'><summary>Only a summary"
                 "</summary><link href='https://example.org/a'/></entry>")
    assert data == {"id": None, "title": None, "content": "Only a summary",
                    "published": None, "updated": None, "author": None,
                    "categories": [], "links": [{"href": "https://example.org/a",
                                                 "rel": "alternate"}]}


@pytest.mark.parametrize("entry", [
    # garbage dates, empty fields, attributes missing
    "<entry xmlns='http://www.w3.org/2005/Atom'><published>yesterday</published>"
    "<updated></updated><category/><category term=''/><link rel='self'/><author/>"
    "<title type='xhtml'>no div</title><content type='unknown/type'>raw</content>"
    "</entry>",
    # deep nesting
    "<entry xmlns='http://www.w3.org/2005/Atom'><content type='xhtml'>"
    "<div xmlns='http://www.w3.org/1999/xhtml'>" + "<span>" * 3000 + "deep"
    + "</span>" * 3000 + "</div></content></entry>",
    # elements of other namespaces with Atom names
    "<entry xmlns='http://www.w3.org/2005/Atom'><title xmlns='urn:other'>x</title>"
    "<author><name><b xmlns='urn:other'>bold</b></name></author></entry>",
    # broken escaped HTML
    "<entry xmlns='http://www.w3.org/2005/Atom'><content type='html'>&lt;p&gt;&lt;b"
    "</content></entry>",
])
def test_malformed_entries_never_raise(entry):
    data = parse(entry)
    assert set(data) == {"id", "title", "content", "published", "updated", "author",
                         "categories", "links"}
    json.dumps(data)


def test_garbage_fields_are_left_out():
    data = parse("<entry xmlns='http://www.w3.org/2005/Atom'><published>2024-13-45"
                 "</published><category term=' a '/><link href='h' rel=''/></entry>")
    assert data["published"] is None
    assert data["categories"] == ["a"]
    # an empty rel is Atom's default one
    assert data["links"] == [{"href": "h", "rel": "alternate"}]


def test_item_without_entry_gives_nothing():
    assert parse("<p xmlns='urn:other'/>") is None
    assert parse("") is None


@pytest_twisted.ensureDeferred
async def test_blog_analyser_registered_with_the_cache():
    host = Host(storage=None)
    XEP_0277(host)
    cache = host.plugins["PUBSUB_CACHE"]
    analyser = cache.analysers["XEP-0277"]
    assert analyser.to_sync is True and analyser.type == "blog"
    client = object()
    service = JID("louise@example.org")
    item = parse_xml(ITEM.format(id="x", entry=MOVIM_ENTRY))

    async def analyse(node, element=item):
        return await cache.analyse_node(client, service, node, element, {})

    blog = await analyse("urn:xmpp:microblog:0")
    assert (blog["analyser"], blog["subtype"], blog["to_sync"]) == ("XEP-0277", None, True)
    comments = await analyse("urn:xmpp:microblog:0:comments/rel")
    assert comments["subtype"] == "comments"
    assert await analyse("urn:xmpp:microblog:0extra") is None
    assert await analyse("urn:xmpp:microblog:0", parse_xml(
        "<item xmlns='http://jabber.org/protocol/pubsub' id='x'>"
        "<p xmlns='urn:other'/></item>")) is None
    parsed = analyser.parser(client, item, service, "urn:xmpp:microblog:0")
    assert parsed["title"] == "Release of the 0.22 version"
