"""li runs on the standard library only: running its commands never imports the backend."""

import json
import os
import subprocess
import sys

#: run in a fresh interpreter: a bridge answering every call, then li's commands, the
#: socket being found through a configuration file (the path rules of libervia.paths)
SCRIPT = r"""
import io, json, os, socket, sys, tempfile, threading

folder = tempfile.mkdtemp(prefix="li-")
path = os.path.join(folder, "b.sock")
ANSWERS = {"profile_list": [{"name": "alice"}], "plugin_list": [],
           "pubsub_subscriptions": [], "pubsub_get": {"items": [], "metadata": {}},
           "cache_get": {"items": [], "metadata": {}},
           "bridge_info": {"protocol_version": "1.0"}}
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen()


def serve():
    while True:
        conn, __ = server.accept()
        with conn, conn.makefile("rb") as reader:
            for line in reader:
                request = json.loads(line)
                result = ANSWERS.get(request["method"], {})
                answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
                conn.sendall(json.dumps(answer).encode() + b"\n")


threading.Thread(target=serve, daemon=True).start()
conf = os.path.join(folder, "c.conf")
with open(conf, "w") as f:
    f.write(f"[bridge]\nsocket = {path}\n")

from libervia.cli.main import main

statuses = {}
for command in json.loads(sys.argv[1]):
    err = io.StringIO()
    status = main([*command, "--config", conf, "--output", "json"], out=io.StringIO(),
                  err=err)
    statuses[" ".join(command)] = [status, err.getvalue()]
heavy = sorted(name for name in sys.modules
               if name.split(".")[0] in ("twisted", "wokkel", "zope", "sqlalchemy",
                                         "platformdirs")
               or name.startswith("libervia.backend"))
print(json.dumps({"statuses": statuses, "heavy": heavy}))
"""

COMMANDS = [
    ["backend", "status"], ["backend", "version"], ["backend", "info"],
    ["plugin", "list"], ["profile", "list"], ["profile", "info", "alice"],
    ["pubsub", "get", "-p", "alice", "-n", "news"],
    ["pubsub", "node", "info", "-p", "alice", "-n", "news"],
    ["pubsub", "node", "list", "-p", "alice"],
    ["profile", "modify", "alice", "--port", "5223"],
    ["pubsub", "subscriptions", "-p", "alice"],
    ["pubsub", "cache", "get", "-p", "alice", "-n", "news"],
    ["pubsub", "cache", "stats", "-p", "alice"],
    ["pubsub", "cache", "search", "-p", "alice", "-f", "xmpp"],
    ["completion", "bash"],
]


def test_running_li_commands_imports_neither_the_backend_nor_twisted():
    env = {k: v for k, v in os.environ.items() if k != "LIBERVIA_BRIDGE_SOCKET"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(COMMANDS)],
                            capture_output=True, text=True, check=True, env=env)
    report = json.loads(result.stdout)
    assert report["statuses"] == {" ".join(c): [0, ""] for c in COMMANDS}
    assert report["heavy"] == []
