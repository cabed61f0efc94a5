"""SharedCalls: identical calls made at once run once and share their outcome."""

import pytest
import pytest_twisted
from twisted.internet import defer

from libervia.backend.core.async_utils import SharedCalls


@pytest_twisted.ensureDeferred
async def test_calls_of_one_key_made_meanwhile_share_the_result_others_run():
    shared = SharedCalls()
    gate: defer.Deferred = defer.Deferred()
    runs = []

    async def slow(name):
        runs.append(name)
        await gate
        return name

    first = defer.ensureDeferred(shared.run("a", lambda: slow("first")))
    second = defer.ensureDeferred(shared.run("a", lambda: slow("second")))
    other = defer.ensureDeferred(shared.run("b", lambda: slow("other")))
    assert "a" in shared and runs == ["first", "other"]
    gate.callback(None)
    assert (await first, await second, await other) == ("first", "first", "other")
    assert "a" not in shared
    # once done, the key runs again
    assert await shared.run("a", lambda: slow("again")) == "again"


@pytest_twisted.ensureDeferred
async def test_the_exception_of_the_running_call_reaches_every_waiter():
    shared = SharedCalls()
    gate: defer.Deferred = defer.Deferred()

    async def failing():
        await gate
        raise ValueError("no")

    calls = [defer.ensureDeferred(shared.run("k", failing)) for __ in range(3)]
    gate.callback(None)
    for call in calls:
        with pytest.raises(ValueError, match="no"):
            await call
    assert "k" not in shared
