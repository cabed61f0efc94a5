"""A plugin exposing a bridge method and a signal, as real plugins do in __init__."""

PLUGIN_INFO = {
    "name": "Bridge sample",
    "import_name": "BRIDGE-SAMPLE",
    "type": "MISC",
    "main": "BridgeSample",
    "description": "Registers a bridge method and a signal.",
}


class BridgeSample:
    def __init__(self, host):
        self.host = host
        host.bridge.register_method("sample.echo", self.echo)
        host.bridge.register_signal("sample.echoed", "an echo was made")

    async def echo(self, text: str) -> str:
        """Return the text, and signal it."""
        self.host.bridge.emit_signal("sample.echoed", text=text)
        return text
