"""The engine on a Redis that wants a password, an ACL user, TLS, client certificates.

Every server is a real ``redis-server`` started so by ``tests/redis_fixtures.py``, with
certificates made by ``tests/certificates.py`` (openssl). Each setting is tested through
both of the engine's own links: the sync one (``Engine.decide``) and the asyncio one
(``Engine.decide_async``); a decision that used Redis is not degraded and the second
decision for one customer is capped. A URL that Redis refuses is one clear error when the
store starts (``RedisAccessDenied``), never the password in it, and not a traceback per
request later.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from redis.exceptions import NoPermissionError

from nba import Engine
from nba.engine.store import StoreUnavailable
from nba.engine.store.redis import RedisAccessDenied, RedisStore

from redis_fixtures import REDIS_HAS_TLS, RedisServer, needs_redis

pytestmark = needs_redis

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "redis-security.md"
RELAXED = {"latency_budget_s": 2.0, "write_timeout_s": 2.0, "connect_timeout_s": 1.0, "io_timeout_s": 2.0}
PASSWORD = "s3cret pass/word"  # a space and a slash: quoted in the URL
ENGINE_PASSWORD = "engine-pass"

RULES = """
profile {
  tier: string
}
rule gold_offer
  when event.type == "visit" and profile.tier == "gold" and count(visit within 1d) >= 0
  then offer via email
  cap 1 per 1d
end
default nothing
"""


def engine_acl() -> str:
    """The ACL of docs/redis-security.md (the test uses what the page documents)."""
    match = re.search(r"```\n(ACL SETUSER nba-engine [^`]*?)\n```", DOC.read_text(encoding="utf-8"))
    assert match, "docs/redis-security.md lost its ACL SETUSER block"
    words = " ".join(match.group(1).split("\\\n")).split()
    return " ".join(words[3:]).replace(">ENGINE_PASSWORD", ">" + ENGINE_PASSWORD)


def near_cache_acl() -> str:
    """The rules docs/redis-security.md adds for the near cache."""
    match = re.search(r"```\n(ACL SETUSER nba-engine \+client[^`]*?)\n```", DOC.read_text(encoding="utf-8"))
    assert match, "docs/redis-security.md lost the near cache's ACL SETUSER block"
    return " ".join(match.group(1).split()[3:])


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "offer.rules"
    path.write_text(RULES)
    return path


def server(**options) -> RedisServer:
    return RedisServer(**options).start()


@pytest.fixture
def stop_after():
    started = []
    yield started.append
    for each in started:
        each.cleanup()


CUSTOMERS = itertools.count(1)


def decides_on_redis(rules: Path, url: str) -> None:
    """Both links read and write: a profile written, the offer given once, then capped."""
    engine = Engine.from_path(rules, redis_url=url, **RELAXED)
    c1, c2 = f"c{next(CUSTOMERS)}", f"c{next(CUSTOMERS)}"
    try:
        engine.put_profile(c1, {"tier": "gold"})
        assert engine.get_profile(c1) == {"tier": "gold"}
        first = engine.decide({"customer_id": c1, "type": "visit"})
        assert (first.action, first.degraded) == ("offer", False)
        second = engine.decide({"customer_id": c1, "type": "visit"})
        assert (second.action, second.degraded) == ("nothing", False)  # the cap, read from Redis

        async def on_the_asyncio_link():
            await engine.put_profile_async(c2, {"tier": "gold"})
            assert await engine.get_profile_async(c2) == {"tier": "gold"}
            first = await engine.decide_async({"customer_id": c2, "type": "visit"})
            second = await engine.decide_async({"customer_id": c2, "type": "visit"})
            await engine.store.close_async()
            return first, second

        first, second = asyncio.run(on_the_asyncio_link())
        assert (first.action, first.degraded) == ("offer", False)
        assert (second.action, second.degraded) == ("nothing", False)
    finally:
        engine.close()


def refused_at_start(url: str) -> RedisAccessDenied:
    with pytest.raises(RedisAccessDenied) as info:
        RedisStore(url, **RELAXED)
    return info.value


# ------------------------------------------------------------------ a password (requirepass)


def test_a_password_in_the_url(rules, stop_after):
    redis = server(password=PASSWORD)
    stop_after(redis)
    decides_on_redis(rules, redis.url_for(password=PASSWORD))
    decides_on_redis(rules, redis.url_for(user="default", password=PASSWORD))
    decides_on_redis(rules, redis.url_for(user="default", password=PASSWORD, protocol="3"))  # HELLO 3 AUTH ...


@pytest.mark.parametrize("credentials", [{"password": "wrong"}, {}, {"user": "nobody", "password": PASSWORD}])
def test_wrong_or_missing_password_is_one_clear_error_at_start(rules, stop_after, credentials):
    redis = server(password=PASSWORD)
    stop_after(redis)
    url = redis.url_for(**credentials)
    error = refused_at_start(url)
    assert f"redis 127.0.0.1:{redis.port} refused this engine: AuthenticationError" in str(error)
    assert PASSWORD not in str(error) and "wrong" not in str(error)
    with pytest.raises(RedisAccessDenied):  # the engine and `nba serve --redis` do not start either
        Engine.from_path(rules, redis_url=url, **RELAXED)


def test_a_password_changed_under_a_running_engine_degrades_and_is_logged_once(rules, stop_after, caplog):
    redis = server(password=PASSWORD)
    stop_after(redis)
    engine = Engine.from_path(rules, redis_url=redis.url_for(password=PASSWORD), **RELAXED | {"retry_interval_s": 0.0})
    try:
        assert engine.decide({"customer_id": "c1", "type": "visit"}).degraded is False
        redis.command("CONFIG", "SET", "requirepass", "rotated")
        redis.password = "rotated"
        redis.command("CLIENT", "KILL", "TYPE", "normal")  # every open connection goes
        with caplog.at_level(logging.ERROR, logger="nba.store.redis"):
            decisions = [engine.decide({"customer_id": f"c{i}", "type": "visit"}) for i in range(20)]
        assert all(decision.degraded for decision in decisions)
        refusals = [record for record in caplog.records if "refused this engine" in record.getMessage()]
        assert len(refusals) == 1 and "rotated" not in refusals[0].getMessage()
    finally:
        engine.close()


# ------------------------------------------------------------------ an ACL user


def test_the_documented_acl_user_with_the_near_cache_rules_lets_it_track(rules, stop_after, caplog):
    redis = server(password=PASSWORD, users=(f"nba-engine {engine_acl()} {near_cache_acl()}",))
    stop_after(redis)
    url = redis.url_for(user="nba-engine", password=ENGINE_PASSWORD, near_cache="100")
    engine = Engine.from_path(rules, redis_url=url, **RELAXED)

    async def decide_twice():
        engine.put_profile("n1", {"tier": "gold"})
        await engine.decide_async({"customer_id": "n0", "type": "visit"})  # opens the link
        first = await engine.decide_async({"customer_id": "n1", "type": "visit"})
        second = await engine.decide_async({"customer_id": "n1", "type": "visit"})
        counters = engine.store.counters()
        await engine.store.close_async()
        return first, second, counters

    try:
        with caplog.at_level(logging.WARNING):
            first, second, counters = asyncio.run(decide_twice())
    finally:
        engine.close()
    assert (first.action, second.action, second.degraded) == ("offer", "nothing", False)
    assert counters["near_cache_hits"] >= 1, counters
    assert "does not track keys" not in caplog.text


def test_the_documented_acl_user_is_enough_and_no_more(rules, stop_after):
    redis = server(password=PASSWORD, users=(f"nba-engine {engine_acl()}",))
    stop_after(redis)
    url = redis.url_for(user="nba-engine", password=ENGINE_PASSWORD)
    decides_on_redis(rules, url)
    assert b"nba:{" in redis.command("KEYS", "nba:*")  # written as the ACL user
    # keys outside the engine's prefix and other commands are refused
    store = RedisStore(url, **RELAXED)
    try:
        [reply] = store.call("other:{x}", [("HGETALL", "other:{x}")], 2.0)
        assert isinstance(reply, NoPermissionError) and "keys" in str(reply)
        [reply] = store.call("nba:{x}", [("FLUSHALL",)], 2.0)
        assert isinstance(reply, NoPermissionError) and "flushall" in str(reply)
    finally:
        store.close()
    other_prefix = RedisStore(url + "?key_prefix=other", **RELAXED, connect_now=False)
    with pytest.raises(StoreUnavailable, match="no permissions"):
        other_prefix.get_profile("c1", Engine.from_path(rules).ruleset.needs)
    other_prefix.close()


def test_an_acl_user_with_a_wrong_password_or_without_the_engines_commands(rules, stop_after):
    lacking = "nba-poor on >poor resetkeys ~nba:* -@all +hgetall +zrangebyscore +evalsha +cluster|slots"
    redis = server(password=PASSWORD, users=(f"nba-engine {engine_acl()}", lacking))
    stop_after(redis)
    error = refused_at_start(redis.url_for(user="nba-engine", password="wrong"))
    assert "AuthenticationError" in str(error)
    error = refused_at_start(redis.url_for(user="nba-poor", password="poor"))
    assert "NoPermissionError" in str(error) and "script" in str(error).lower()


# ------------------------------------------------------------------ TLS


needs_tls = pytest.mark.skipif(not REDIS_HAS_TLS, reason="this redis-server has no TLS")


@needs_tls
def test_tls(rules, stop_after, certificates):
    redis = server(tls=certificates)
    stop_after(redis)
    decides_on_redis(rules, redis.url_for())  # rediss://...?ssl_ca_certs=ca.crt
    decides_on_redis(rules, redis.url_for(ssl_cert_reqs="required", ssl_check_hostname="true"))


@needs_tls
def test_tls_with_client_certificates_and_an_acl_user(rules, stop_after, certificates):
    redis = server(
        tls=certificates, tls_client_certificates=True, password=PASSWORD, users=(f"nba-engine {engine_acl()}",)
    )
    stop_after(redis)
    decides_on_redis(rules, redis.url_for(user="nba-engine", password=ENGINE_PASSWORD))
    # no client certificate: the server hangs up in the handshake
    bare = f"rediss://nba-engine:{ENGINE_PASSWORD}@127.0.0.1:{redis.port}/0?ssl_ca_certs={certificates.ca}"
    error = refused_at_start(bare)
    assert "client certificate" in str(error) and ENGINE_PASSWORD not in str(error)


@needs_tls
def test_tls_refusals_are_clear_at_start(stop_after, certificates):
    redis = server(tls=certificates)
    stop_after(redis)
    error = refused_at_start(redis.url_for(ssl_ca_certs=str(certificates.other_ca)))
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    error = refused_at_start(redis.url_for(ssl_ca_certs="/nonexistent/ca.crt"))
    assert "cannot be read" in str(error)
    with pytest.raises(ValueError, match="rediss://"):
        RedisStore(redis.url_for().replace("rediss://", "redis://"))


def test_an_unreachable_redis_is_not_an_error_at_start(stop_after):
    redis = server(password=PASSWORD)
    url = redis.url_for(password="wrong")
    redis.cleanup()
    store = RedisStore(url, **RELAXED)  # decisions are degraded until it is back
    store.close()


def test_nba_serve_and_nba_replay_with_a_wrong_password_stop_with_one_clear_line(rules, stop_after, tmp_path):
    redis = server(password=PASSWORD)
    stop_after(redis)
    url = redis.url_for(password="not-the-password")
    nba = [str(Path(sys.executable).with_name("nba"))]
    served = subprocess.run(
        [*nba, "serve", str(rules), "--port", "0", "--redis", url], capture_output=True, text=True, timeout=120
    )
    events = tmp_path / "events.jsonl"
    events.write_text('{"customer_id": "c1", "type": "visit", "time": 1700000000}\n')
    replayed = subprocess.run(
        [*nba, "replay", str(rules), str(events), "--redis", url], capture_output=True, text=True, timeout=120
    )
    for run in (served, replayed):
        output = run.stdout + run.stderr
        assert run.returncode == 2, output
        assert "refused this engine: AuthenticationError" in output
        assert "Traceback" not in output and "not-the-password" not in output
