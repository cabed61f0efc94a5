# twistd plugin: the backend module is imported only when "libervia-backend" is run.
from twisted.application.service import ServiceMaker

libervia_backend = ServiceMaker(
    "Libervia backend",
    "libervia.backend.app.tap",
    "XMPP client backend: profiles, plugins, storage and pubsub cache",
    "libervia-backend",
)
