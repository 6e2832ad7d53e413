"""``longtls.metrics`` scraped over HTTP and read by a strict parser of the
Prometheus text exposition format (0.0.4), after real connections.

The parser below is written from the format's description (HELP/TYPE lines,
``name{label="value",...} value``, label value escapes, histogram series) and
refuses anything it does not understand, so a malformed exposition fails here
before it fails a real Prometheus.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import platform
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import cryptography
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import longtls
from helpers.pair import configs
from helpers.peers import LOOPBACK
from longtls import aio
from longtls.errors import TLSError
from longtls.metrics import Metrics, serve_metrics

# -- a strict text-format parser ----------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>\S+)$")
_LABEL = re.compile(rf'(?P<name>{_LABEL_NAME})="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    kind: str = ""
    help: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, suffix: str = "", **labels: str) -> float:
        return self.samples[(self.name + suffix, tuple(sorted(labels.items())))]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def _parse_labels(text: str) -> Labels:
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"bad label syntax at {text[pos:]!r}"
        pairs.append((match["name"], _unescape(match["value"])))
        pos = match.end()
        if pos < len(text):
            assert text[pos] == ",", f"expected ',' in {text!r}"
            pos += 1
    names = [n for n, _ in pairs]
    assert len(set(names)) == len(names), f"repeated label in {text!r}"
    return tuple(sorted(pairs))


def _parse_value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("+", ""))
    assert re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def _family_of(sample: str, families: dict[str, Family]) -> Family:
    if sample in families and families[sample].kind != "histogram":
        return families[sample]
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and base in families and families[base].kind == "histogram":
            return families[base]
    raise AssertionError(f"sample {sample} has no # TYPE line before it")


def parse(text: str) -> dict[str, Family]:
    """Families by name; fails on anything a Prometheus scrape would reject."""
    assert text.endswith("\n"), "the exposition ends with a line feed"
    families: dict[str, Family] = {}
    seen: set[tuple[str, Labels]] = set()
    for line in text[:-1].split("\n"):
        assert line, "no blank lines"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert len(parts) == 4 and parts[1] in ("HELP", "TYPE"), f"bad comment {line!r}"
            _, keyword, name, rest = parts
            assert re.fullmatch(_NAME, name), name
            family = families.setdefault(name, Family(name))
            if keyword == "TYPE":
                assert not family.kind, f"two TYPE lines for {name}"
                assert not family.samples, f"TYPE after samples for {name}"
                assert rest in _TYPES, rest
                family.kind = rest
            else:
                assert not family.help, f"two HELP lines for {name}"
                family.help = rest
            continue
        match = _SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        labels = _parse_labels(match["labels"] or "")
        key = (match["name"], labels)
        assert key not in seen, f"duplicate series {line!r}"
        seen.add(key)
        _family_of(match["name"], families).samples[key] = _parse_value(match["value"])
    for family in families.values():
        assert family.kind, f"{family.name} has no TYPE"
        if family.kind == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    buckets = sorted(
        (_parse_value(dict(labels)["le"]), value)
        for (name, labels), value in family.samples.items()
        if name == family.name + "_bucket"
    )
    assert buckets and math.isinf(buckets[-1][0]), f"{family.name}: no +Inf bucket"
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), f"{family.name}: buckets not cumulative"
    assert counts[-1] == family.value("_count"), f"{family.name}: +Inf bucket != _count"
    assert family.value("_sum") >= 0


def test_parser_refuses_what_prometheus_refuses() -> None:
    good = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v\\"w"} 1\n'
    assert parse(good)["a_total"].value(k='v"w') == 1
    for bad in (
        'a_total 1\n',  # no TYPE
        '# TYPE a_total counter\na_total{k="v"} 1\na_total{k="v"} 2\n',  # duplicate series
        '# TYPE a_total counter\na_total{k=v} 1\n',  # unquoted label value
        '# TYPE a_total counter\na_total one\n',  # not a number
        '# TYPE h histogram\nh_bucket{le="1.0"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    ):
        with pytest.raises(AssertionError):
            parse(bad)


# -- a real server, real clients, a real scrape ------------------------------------------


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def http_get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


async def scrape(port: int) -> dict[str, Family]:
    status, body = await http_get(port, "/metrics")
    assert status == "HTTP/1.0 200 OK"
    return parse(body)


async def echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


def test_scraped_families_after_real_connections() -> None:
    client_config, server_config, _ = configs(server_handshake_timeout=0.3)
    stranger_config = configs()[0]  # trusts another CA: refuses our server's certificate
    metrics = Metrics()
    metrics.certificates = lambda: server_config.certificate_chain

    async def scenario() -> tuple[dict[str, Family], str]:
        server = await aio.start_server(echo, LOOPBACK, 0, server_config, aio.StreamOptions(metrics=metrics))
        http = await serve_metrics(metrics, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        http_port = http.sockets[0].getsockname()[1]
        async with server, http:
            assert await http_get(http_port, "/healthz") == ("HTTP/1.0 200 OK", "ok\n")
            idle = await scrape(http_port)
            # No connection: the key age gauge is declared but has no sample.
            assert idle["longtls_oldest_key_age_seconds"].kind == "gauge"
            assert idle["longtls_oldest_key_age_seconds"].samples == {}

            _, writer = await aio.connect(LOOPBACK, port, client_config)
            await writer.update_keys()
            await writer.update_keys()
            live = await scrape(http_port)
            assert 0 <= live["longtls_oldest_key_age_seconds"].value() < 5
            writer.close()
            await writer.wait_closed()

            # Refused by the client: it sends the alert, the server receives it.
            with pytest.raises(TLSError) as refused:
                await aio.connect(LOOPBACK, port, stranger_config)
            # Not TLS at all.
            _, plain = await asyncio.open_connection(LOOPBACK, port)
            plain.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            # Silent past the server's handshake timeout (0.3 s).
            _, silent = await asyncio.open_connection(LOOPBACK, port)
            # Gone before saying anything.
            _, gone = await asyncio.open_connection(LOOPBACK, port)
            gone.close()
            await until(lambda: metrics.handshakes["failed"] == 4 and metrics.open_connections == 0)
            plain.close()
            silent.close()
            final = await scrape(http_port)
        return final, refused.value.alert.name

    families, alert = run(scenario())

    kinds = {name: f.kind for name, f in families.items()}
    assert kinds["longtls_handshake_duration_seconds"] == "histogram"
    assert kinds["longtls_key_update_duration_seconds"] == "histogram"
    assert kinds["longtls_handshake_failures_total"] == "counter"
    assert kinds["longtls_certificate_not_after_timestamp_seconds"] == "gauge"
    assert kinds["longtls_build_info"] == "gauge"

    handshakes = families["longtls_handshake_duration_seconds"]
    assert handshakes.value("_count") == 1  # successful handshakes only
    assert 0 < handshakes.value("_sum") < 5
    updates = families["longtls_key_update_duration_seconds"]
    assert updates.value("_count") == 2
    assert 0 < updates.value("_sum") < 5

    failures = families["longtls_handshake_failures_total"]
    assert failures.value(alert=alert, sent_by="peer") == 1
    assert failures.value(alert="not_tls", sent_by="local") == 1
    assert failures.value(alert="timeout", sent_by="local") == 1
    assert failures.value(alert="connection_lost", sent_by="none") == 1
    assert sum(failures.samples.values()) == families["longtls_handshakes_total"].value(result="failed") == 4

    expiry = families["longtls_certificate_not_after_timestamp_seconds"]
    assert len(expiry.samples) == len(server_config.certificate_chain)
    for cert in server_config.certificate_chain:
        labels = {"subject": cert.subject.rfc4514_string(), "serial": format(cert.serial_number, "X")}
        assert expiry.value(**labels) == cert.not_valid_after_utc.timestamp()

    assert families["longtls_build_info"].value(
        version=longtls.__version__, python=platform.python_version(), cryptography=cryptography.__version__
    ) == 1
    # Closed again: no key, no key age.
    assert families["longtls_oldest_key_age_seconds"].samples == {}


def test_certificate_labels_survive_quotes_and_backslashes() -> None:
    """A subject may hold '"' and '\\': escaped in the exposition, read back intact."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'odd "name" \\ here'),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "line\nfeed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(0xABCDEF).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3))
        .sign(key, hashes.SHA256())
    )
    metrics = Metrics()
    metrics.certificates = lambda: [cert]
    expiry = parse(metrics.render())["longtls_certificate_not_after_timestamp_seconds"]
    assert expiry.value(subject=name.rfc4514_string(), serial="ABCDEF") == cert.not_valid_after_utc.timestamp()


def test_healthz_and_unknown_paths() -> None:
    async def scenario() -> tuple[tuple[str, str], tuple[str, str]]:
        http = await serve_metrics(Metrics(), LOOPBACK, 0)
        port = http.sockets[0].getsockname()[1]
        async with http:
            return await http_get(port, "/healthz"), await http_get(port, "/nope")

    healthz, other = run(scenario())
    assert healthz == ("HTTP/1.0 200 OK", "ok\n")
    assert other[0] == "HTTP/1.0 404 Not Found"

