"""``storage.profiles``: profiles, their parameters and private values.

A profile is one XMPP identity of the backend's user; parameters are string values by
category and name, general or of one profile; private values are JSON or binary values
by namespace and key, general or of one profile (plugins keep their state there).
"""

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twisted.internet import defer

from libervia.backend.core.exceptions import ConflictError, NotFound
from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.sqla_mapping import (
    ParamGen,
    ParamInd,
    PrivateGen,
    PrivateGenBin,
    PrivateInd,
    PrivateIndBin,
    Profile,
)
from libervia.backend.memory.storage.runner import StorageComponent


class ProfilesComponent(StorageComponent):
    """Profiles, parameters and private values; every method returns a Deferred."""

    # profiles

    def get_profiles(self) -> defer.Deferred:
        """Return ``{profile name: profile id}``."""
        return self.runner.run_in_session("get_profiles", thd_get_profiles, write=False)

    def create_profile(self, name: str) -> defer.Deferred:
        """Create a profile and return its id.

        :raise ConflictError: a profile with this name exists
        """
        return self.runner.run_in_session("create_profile", thd_create_profile, name)

    def delete_profile(self, name: str) -> defer.Deferred:
        """Delete a profile with all its data (parameters, private values, cache).

        :raise NotFound: no such profile
        """
        return self.runner.run_in_session("delete_profile", thd_delete_profile, name)

    # parameters

    def get_params(
        self, profile: str | None = None, category: str | None = None
    ) -> defer.Deferred:
        """Return ``{(category, name): value}`` of general or ``profile``'s parameters."""
        return self.runner.run_in_session(
            "get_params", thd_get_params, profile, category, write=False
        )

    def get_param(
        self, category: str, name: str, profile: str | None = None
    ) -> defer.Deferred:
        """Return the value of a parameter, or ``None`` if it is not set."""
        return self.runner.run_in_session(
            "get_param", thd_get_param, category, name, profile, write=False
        )

    def set_param(
        self, category: str, name: str, value: str | None, profile: str | None = None
    ) -> defer.Deferred:
        """Set a general parameter, or ``profile``'s one."""
        return self.runner.run_in_session(
            "set_param", thd_set_param, self.db_engine, category, name, value, profile
        )

    def delete_param(
        self, category: str, name: str, profile: str | None = None
    ) -> defer.Deferred:
        """Delete a parameter; fire with True if it existed."""
        return self.runner.run_in_session("delete_param", thd_delete_param, category,
                                          name, profile)

    # private values

    def get_privates(
        self,
        namespace: str,
        keys: Iterable[str] | None = None,
        *,
        binary: bool = False,
        profile: str | None = None,
    ) -> defer.Deferred:
        """Return ``{key: value}`` of a namespace (all its keys, or only ``keys``).

        Values are what was stored: JSON-serialisable values, or ``bytes`` if
        ``binary``.
        """
        return self.runner.run_in_session(
            "get_privates", thd_get_privates, namespace,
            None if keys is None else list(keys), binary, profile, write=False,
        )

    def set_private_value(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        binary: bool = False,
        profile: str | None = None,
    ) -> defer.Deferred:
        """Store a private value: JSON-serialisable, or ``bytes`` if ``binary``."""
        if binary:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                return defer.fail(TypeError(
                    f"binary private values must be bytes, not {type(value).__name__}"
                ))
            stored: Any = bytes(value)
        else:
            try:
                stored = json.dumps(value, ensure_ascii=False)
            except (TypeError, ValueError) as e:
                return defer.fail(TypeError(f"private value is not JSON-serialisable: {e}"))
        return self.runner.run_in_session(
            "set_private_value", thd_set_private_value, self.db_engine, namespace, key,
            stored, binary, profile,
        )

    def del_private_value(
        self, namespace: str, key: str, *, binary: bool = False, profile: str | None = None
    ) -> defer.Deferred:
        """Delete a private value; fire with True if it existed."""
        return self.runner.run_in_session(
            "del_private_value", thd_del_private, namespace, [key], binary, profile
        ).addCallback(bool)

    def del_private_namespace(
        self, namespace: str, *, binary: bool = False, profile: str | None = None
    ) -> defer.Deferred:
        """Delete every value of a namespace; fire with how many there were."""
        return self.runner.run_in_session(
            "del_private_namespace", thd_del_private, namespace, None, binary, profile
        )


# functions run in the storage's threads


def thd_profile_id(session: Session, profile: str) -> int:
    """Id of the profile named ``profile``; other components use it too.

    :raise NotFound: no such profile
    """
    profile_id = session.scalar(select(Profile.id).where(Profile.name == profile))
    if profile_id is None:
        raise NotFound(f"there is no profile named {profile!r}")
    return profile_id


def thd_get_profiles(session: Session) -> dict[str, int]:
    return {name: id_ for name, id_ in session.execute(select(Profile.name, Profile.id))}


def thd_create_profile(session: Session, name: str) -> int:
    profile = Profile(name=name)
    try:
        with session.begin_nested():
            session.add(profile)
    except IntegrityError:
        raise ConflictError(f"a profile named {name!r} already exists") from None
    return profile.id


def thd_delete_profile(session: Session, name: str) -> None:
    result = session.execute(delete(Profile).where(Profile.name == name))
    if not result.rowcount:
        raise NotFound(f"there is no profile named {name!r}")


def thd_get_params(
    session: Session, profile: str | None, category: str | None
) -> dict[tuple[str, str], str | None]:
    if profile is None:
        query = select(ParamGen.category, ParamGen.name, ParamGen.value)
        if category is not None:
            query = query.where(ParamGen.category == category)
    else:
        profile_id = thd_profile_id(session, profile)
        query = select(ParamInd.category, ParamInd.name, ParamInd.value).where(
            ParamInd.profile_id == profile_id
        )
        if category is not None:
            query = query.where(ParamInd.category == category)
    return {(cat, name): value for cat, name, value in session.execute(query)}


def thd_get_param(
    session: Session, category: str, name: str, profile: str | None
) -> str | None:
    if profile is None:
        param = session.get(ParamGen, (category, name))
    else:
        param = session.get(ParamInd, (category, name, thd_profile_id(session, profile)))
    return None if param is None else param.value


def _thd_upsert_value(
    session: Session, db_engine: DatabaseEngine, cls: type, keys: dict[str, Any],
    value: Any,
) -> None:
    # an upsert, not a read then a write: two calls setting the same key at the same
    # time must not fail on the primary key
    stmt = db_engine.upsert(cls.__table__, list(keys), ["value"])
    session.execute(stmt, {**keys, "value": value})


def thd_set_param(
    session: Session,
    db_engine: DatabaseEngine,
    category: str,
    name: str,
    value: str | None,
    profile: str | None,
) -> None:
    keys: dict[str, Any] = {"category": category, "name": name}
    if profile is not None:
        keys["profile_id"] = thd_profile_id(session, profile)
    _thd_upsert_value(session, db_engine, ParamGen if profile is None else ParamInd, keys,
                      value)


def thd_delete_param(
    session: Session, category: str, name: str, profile: str | None
) -> bool:
    if profile is None:
        stmt = delete(ParamGen).where(ParamGen.category == category, ParamGen.name == name)
    else:
        stmt = delete(ParamInd).where(
            ParamInd.category == category,
            ParamInd.name == name,
            ParamInd.profile_id == thd_profile_id(session, profile),
        )
    return bool(session.execute(stmt).rowcount)


def _private_class(binary: bool, profile: str | None) -> type:
    if profile is None:
        return PrivateGenBin if binary else PrivateGen
    return PrivateIndBin if binary else PrivateInd


def _private_filter(
    session: Session, cls: type, namespace: str, profile: str | None
) -> list[ColumnElement[bool]]:
    conditions = [cls.namespace == namespace]
    if profile is not None:
        conditions.append(cls.profile_id == thd_profile_id(session, profile))
    return conditions


def thd_get_privates(
    session: Session,
    namespace: str,
    keys: list[str] | None,
    binary: bool,
    profile: str | None,
) -> dict[str, Any]:
    cls = _private_class(binary, profile)
    query = select(cls.key, cls.value).where(*_private_filter(session, cls, namespace,
                                                              profile))
    if keys is not None:
        query = query.where(cls.key.in_(keys))
    values: dict[str, Any] = {}
    for key, value in session.execute(query):
        if binary or value is None:
            values[key] = value
        else:
            values[key] = json.loads(value)
    return values


def thd_set_private_value(
    session: Session,
    db_engine: DatabaseEngine,
    namespace: str,
    key: str,
    stored: str | bytes,
    binary: bool,
    profile: str | None,
) -> None:
    keys: dict[str, Any] = {"namespace": namespace, "key": key}
    if profile is not None:
        keys["profile_id"] = thd_profile_id(session, profile)
    _thd_upsert_value(session, db_engine, _private_class(binary, profile), keys, stored)


def thd_del_private(
    session: Session,
    namespace: str,
    keys: list[str] | None,
    binary: bool,
    profile: str | None,
) -> int:
    cls = _private_class(binary, profile)
    stmt = delete(cls).where(*_private_filter(session, cls, namespace, profile))
    if keys is not None:
        stmt = stmt.where(cls.key.in_(keys))
    return session.execute(stmt).rowcount
