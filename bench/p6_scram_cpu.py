"""P6: CPU time of a SCRAM-SHA-256 login, against PBKDF2 alone.

The client side is the backend's own :class:`ScramClient`, built with the arguments
the SASL initializer gives it (mechanism list advertised, iteration limits of the
default policy, the profile's key cache); the server side is ``scramp``, an
independent implementation.  Only the client's steps are timed, with
:func:`time.process_time` (CPU, not wall time: the machine is shared): building the
client (PRECIS preparation of the credentials), client-first, server-first check and
key derivation, client-final, server-final check.  The server's steps run between
the timed parts, outside them.

The baseline is ``hashlib.pbkdf2_hmac("sha256", ...)`` with the same password, salt
and iteration count, measured alternately with the exchange: PBKDF2 is the floor of
any SCRAM client, the ratio shows what the rest of the exchange costs.

The reconnection row replays the exchange with the keys the first one cached, stored
and read back the way the connection layer persists them (``export`` then ``load``),
while a wrapper counts the calls to the PBKDF2 function: a reconnection must make
none.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable

from scramp import ScramMechanism

from bench.harness import Bench, Result, Stats, ratio_result
from libervia.backend.xmpp.sasl.mechanisms import SASLPolicy
from libervia.backend.xmpp.sasl.scram import ScramClient, ServerAdvertisement
from libervia.backend.xmpp.sasl.scram_keys import SCRAM_MECHANISMS, ScramKeyCache

MECHANISM = "SCRAM-SHA-256"
USER = "bench"
PASSWORD = "correct horse battery staple"
TARGET = 1.1


class CountingKDF:
    """``hashlib.pbkdf2_hmac``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, hash_name: str, password: bytes, salt: bytes, iterations: int
                 ) -> bytes:
        self.calls += 1
        return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)


class Exchange:
    """Complete exchanges between the backend's client and a ``scramp`` server."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations
        self.salt = secrets.token_bytes(16)
        # the server's stored keys are made once: a real server does not derive them
        # at each login either
        self._auth_info = ScramMechanism(MECHANISM).make_auth_info(
            PASSWORD, iteration_count=iterations, salt=self.salt)
        self._policy = SASLPolicy()
        self._advertisement = ServerAdvertisement(SCRAM_MECHANISMS + ("PLAIN",))

    def run(self, key_cache: ScramKeyCache | None = None,
            kdf: Callable[..., bytes] = hashlib.pbkdf2_hmac) -> tuple[float, ScramClient]:
        """One exchange; the client's CPU time (server steps excluded) and the client."""
        server = ScramMechanism(MECHANISM).make_server(lambda username: self._auth_info)
        clock = time.process_time
        start = clock()
        client = ScramClient(
            MECHANISM, USER, PASSWORD, advertisement=self._advertisement,
            min_iterations=self._policy.min_iterations,
            max_iterations=self._policy.max_iterations, key_cache=key_cache, kdf=kdf)
        first = client.client_first()
        spent = clock() - start
        server.set_client_first(first.decode())
        server_first = server.get_server_first().encode()
        start = clock()
        final = client.respond(server_first)
        spent += clock() - start
        server.set_client_final(final.decode())
        server_final = server.get_server_final().encode()
        start = clock()
        client.verify_server_final(server_final)
        spent += clock() - start
        if not client.done:
            raise RuntimeError("the SCRAM exchange did not complete")
        return spent, client

    def pbkdf2(self) -> float:
        """CPU time of the bare key derivation with the same parameters."""
        clock = time.process_time
        start = clock()
        hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), self.salt, self.iterations)
        return clock() - start


#: iteration counts measured, with how many times ``bench.repeat`` pairs of samples
#: to take (a short exchange needs more of them to make a steady median)
ITERATIONS = ((4096, 10), (100_000, 1))


async def run(bench: Bench) -> list[Result]:
    results = []
    for iterations, weight in ITERATIONS:
        exchange = Exchange(iterations)
        exchange.run()
        exchange.pbkdf2()
        measured: list[float] = []
        baseline: list[float] = []
        for round_ in range(bench.repeat * weight):
            # each goes first every other round: neither gains from running warm
            if round_ % 2:
                baseline.append(exchange.pbkdf2())
                measured.append(exchange.run()[0])
            else:
                measured.append(exchange.run()[0])
                baseline.append(exchange.pbkdf2())
        results.append(ratio_result(
            "P6", "SCRAM-SHA-256 client exchange, CPU", f"{iterations:,} iterations",
            measured, "hashlib.pbkdf2_hmac", baseline, f"<= {TARGET}x",
            lambda ratio: ratio <= TARGET))
        results.append(reconnection(bench, exchange, baseline))
    return results


def reconnection(bench: Bench, exchange: Exchange, baseline: list[float]) -> Result:
    """Exchanges with the keys cached by a first login: PBKDF2 must not run."""
    stored: list[str] = []
    first_login = ScramKeyCache(on_change=lambda cache: stored.append(
        json.dumps(cache.export())))
    counter = CountingKDF()
    exchange.run(first_login, counter)
    first_calls = counter.calls
    counter.calls = 0
    samples = []
    cached = 0
    for __ in range(bench.repeat):
        # what a reconnection finds: the cache as the profile stored it
        key_cache = ScramKeyCache()
        key_cache.load(json.loads(stored[-1]))
        spent, client = exchange.run(key_cache, counter)
        samples.append(spent)
        cached += client.used_cached_keys
    measured = Stats.of(samples)
    pbkdf2 = Stats.of(baseline)
    return Result(
        id="P6", what="SCRAM-SHA-256 reconnection with cached keys, CPU",
        setting=f"{exchange.iterations:,} iterations", measured=measured,
        target="0 PBKDF2 calls", met=counter.calls == 0 and cached == len(samples),
        baseline_what="hashlib.pbkdf2_hmac", baseline=pbkdf2,
        ratio=measured.ratio_to(pbkdf2),
        notes=(f"{exchange.iterations:,} iterations: PBKDF2 calls counted: "
               f"{first_calls} at the first login, {counter.calls} in "
               f"{len(samples)} reconnections with the stored keys"),
        details={"pbkdf2_calls_first_login": first_calls,
                 "pbkdf2_calls_reconnections": counter.calls,
                 "reconnections": len(samples), "used_cached_keys": cached})
