"""``storage.caps``: what entity capabilities hashes (XEP-0115) stand for.

A hash is verified once (its disco#info hashed again gives it) and kept for every
profile: entities announcing it are known without asking, even after a restart.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session
from twisted.internet import defer

from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.sqla_mapping import DiscoCaps, utcnow
from libervia.backend.memory.storage.runner import StorageComponent


class CapsComponent(StorageComponent):
    """Verified capabilities; every method returns a Deferred."""

    def get_caps(self, hash_algo: str, ver: str) -> defer.Deferred:
        """The disco#info (XML text of its ``<query/>``) hashed to ``ver``, or ``None``."""
        return self.runner.run_in_session("get_caps", thd_get_caps, hash_algo, ver,
                                          write=False)

    def set_caps(self, hash_algo: str, ver: str, info: str) -> defer.Deferred:
        """Keep the disco#info that ``ver`` stands for (verified by the caller)."""
        return self.runner.run_in_session("set_caps", thd_set_caps, self.db_engine,
                                          hash_algo, ver, info)


def thd_get_caps(session: Session, hash_algo: str, ver: str) -> str | None:
    return session.scalar(select(DiscoCaps.info).where(
        DiscoCaps.hash_algo == hash_algo, DiscoCaps.ver == ver))


def thd_set_caps(session: Session, db_engine: DatabaseEngine, hash_algo: str, ver: str,
                 info: str) -> None:
    # two profiles may verify the same hash at the same time: an upsert, not a read
    # then a write
    stmt = db_engine.upsert(DiscoCaps.__table__, ["hash_algo", "ver"], ["info"])
    session.execute(stmt, {"hash_algo": hash_algo, "ver": ver, "info": info,
                           "created": utcnow()})
