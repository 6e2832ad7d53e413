#!/usr/bin/env python3
"""Soak test: one longtls connection, data both ways, key updates from both
sides, for a long time -- and nothing lost, nothing leaked.

    scripts/soak.py                       # 10 minutes, EKU (draft-13), updates every 100 ms
    scripts/soak.py --duration 60         # what CI runs (tests/unit/test_soak.py)
    scripts/soak.py --classic             # standard KeyUpdate instead of EKU
    scripts/soak.py --profile draft-05 --group x25519 --json

A client and a server (``longtls.aio``) on 127.0.0.1 in this process stream
random bytes to each other as fast as the event loop lets them, while each
side starts a key update every ``--update-interval`` seconds (so updates
cross).  At the end each side sends close_notify and reads to EOF.

Checks (exit status 1 if any fails):

* every byte arrived, in order: SHA-256 and length of what each side sent
  equal those of what the other received;
* resident memory is flat: VmRSS at 10% of the run vs at the end grows by
  less than ``--max-rss-growth-mb``;
* no file descriptor leaked: /proc/self/fd before the server starts and
  after everything closed;
* both sides completed updates (at least half the expected number), and no
  update or connection failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "src").is_dir() and str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from longtls import aio  # noqa: E402
from longtls.config import Configuration  # noqa: E402
from longtls.constants import NamedGroup  # noqa: E402
from longtls.crypto.certificates import TrustStore  # noqa: E402

CHUNK = 16 * 1024


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def make_configs(args: argparse.Namespace) -> tuple[Configuration, Configuration]:
    """A throwaway CA and server certificate (ECDSA P-256), in memory."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "longtls soak CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    common: dict[str, Any] = {
        "extended_key_update": not args.classic,
        "eku_profile": args.profile,
        "groups": [NamedGroup[args.group]],
    }
    client = Configuration(
        is_client=True, server_name="localhost", trust_store=TrustStore([ca]),
        key_share_groups=[NamedGroup[args.group]], **common,
    )
    # Updates every --update-interval from both sides are the point: no pacing
    # (a server's default answers one peer-started update a second).
    server = Configuration(
        is_client=False, certificate_chain=[leaf], private_key=key, eku_min_interval=0.0, **common
    )
    return client, server


@dataclass
class Side:
    name: str
    sent: Any = field(default_factory=hashlib.sha256)
    received: Any = field(default_factory=hashlib.sha256)
    sent_bytes: int = 0
    received_bytes: int = 0
    updates: int = 0
    update_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def stream(side: Side, reader: aio.TLSReader, writer: aio.TLSWriter, args: argparse.Namespace,
                 deadline: float, rng: random.Random) -> None:
    """Send until the deadline, start updates all along, then close_notify and read to EOF."""

    async def send() -> None:
        while time.monotonic() < deadline:
            data = rng.randbytes(rng.randint(1, CHUNK))
            writer.write(data)
            side.sent.update(data)
            side.sent_bytes += len(data)
            await writer.drain()
            await asyncio.sleep(0)

    async def receive() -> None:
        while data := await reader.read(65536):
            side.received.update(data)
            side.received_bytes += len(data)

    async def update() -> None:
        # Offset the two sides by half an interval, and jitter, so updates
        # sometimes cross and sometimes do not.
        await asyncio.sleep(args.update_interval * (0.5 if side.name == "server" else 1.0))
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(30):
                    await writer.update_keys()
                side.updates += 1
            except Exception as exc:
                side.update_errors.append(f"{type(exc).__name__}: {exc}")
                if writer.is_closing():
                    return
            await asyncio.sleep(args.update_interval * rng.uniform(0.8, 1.2))

    receiving = asyncio.ensure_future(receive())
    try:
        await asyncio.gather(send(), update())
        writer.write_eof()  # close_notify: our direction is complete
        await receiving
    except Exception as exc:
        side.errors.append(f"{type(exc).__name__}: {exc}")
        receiving.cancel()
    finally:
        writer.close()
        await writer.wait_closed()


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    client_cfg, server_cfg = make_configs(args)
    gc.collect()
    fds_before = fd_count()
    started = time.monotonic()
    deadline = started + args.duration
    client, server = Side("client"), Side("server")
    server_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        try:
            await stream(server, reader, writer, args, deadline, random.Random(2))
        finally:
            if not server_done.done():
                server_done.set_result(None)

    listener = await aio.start_server(handle, "127.0.0.1", 0, server_cfg)
    port = listener.sockets[0].getsockname()[1]
    rss: dict[str, int] = {"start": rss_kib()}

    async def sample_rss() -> None:
        await asyncio.sleep(args.duration * 0.1)
        rss["at_10_percent"] = rss_kib()
        peak = rss["at_10_percent"]
        while time.monotonic() < deadline:
            await asyncio.sleep(min(1.0, args.duration / 20))
            peak = max(peak, rss_kib())
        rss["peak"] = peak
        rss["end"] = rss_kib()

    sampler = asyncio.ensure_future(sample_rss())
    try:
        reader, writer = await aio.connect("127.0.0.1", port, client_cfg)
        await stream(client, reader, writer, args, deadline, random.Random(1))
        async with asyncio.timeout(60):
            await server_done
        await sampler
    finally:
        sampler.cancel()
        listener.close()
        await listener.wait_closed()
    elapsed = time.monotonic() - started
    for _ in range(20):  # let closing transports finish
        await asyncio.sleep(0.05)
    gc.collect()
    fds_after = fd_count()
    return summarize(args, client, server, rss, fds_before, fds_after, elapsed)


def summarize(args: argparse.Namespace, client: Side, server: Side, rss: dict[str, int],
              fds_before: int, fds_after: int, elapsed: float) -> dict[str, Any]:
    failures: list[str] = []
    directions = {
        "client->server": (client.sent, client.sent_bytes, server.received, server.received_bytes),
        "server->client": (server.sent, server.sent_bytes, client.received, client.received_bytes),
    }
    result: dict[str, Any] = {"duration_s": round(elapsed, 1), "mode": "KeyUpdate" if args.classic else f"EKU {args.profile}",
                              "group": args.group, "directions": {}, "updates": {}}
    for name, (sent, sent_n, received, received_n) in directions.items():
        ok = sent.digest() == received.digest() and sent_n == received_n
        result["directions"][name] = {
            "sent_bytes": sent_n, "received_bytes": received_n, "sha256_sent": sent.hexdigest(),
            "sha256_received": received.hexdigest(), "intact": ok,
            "mb_per_s": round(sent_n / elapsed / 1e6, 2),
        }
        if not ok:
            failures.append(f"{name}: {sent_n} bytes sent, {received_n} received, digests "
                            f"{'equal' if sent.digest() == received.digest() else 'differ'}")
        if sent_n == 0:
            failures.append(f"{name}: nothing was sent")
    expected = args.duration / args.update_interval
    for side in (client, server):
        result["updates"][side.name] = {"completed": side.updates, "failed": len(side.update_errors)}
        if side.updates < expected * 0.5:
            failures.append(f"{side.name}: only {side.updates} updates completed (started every "
                            f"{args.update_interval:g} s for {args.duration:g} s)")
        for err in (side.errors + side.update_errors)[:5]:
            failures.append(f"{side.name}: {err}")
    growth_kib = rss.get("end", 0) - rss.get("at_10_percent", 0)
    result["rss_kib"] = {**rss, "growth_10_percent_to_end": growth_kib}
    if growth_kib > args.max_rss_growth_mb * 1024:
        failures.append(f"resident memory grew by {growth_kib / 1024:.1f} MiB from 10% of the run to its end "
                        f"(limit {args.max_rss_growth_mb:g} MiB)")
    result["fds"] = {"before": fds_before, "after": fds_after}
    if fds_after > fds_before:
        failures.append(f"{fds_after - fds_before} file descriptor(s) leaked ({fds_before} before, {fds_after} after)")
    result["failures"] = failures
    result["ok"] = not failures
    return result


def print_summary(result: dict[str, Any]) -> None:
    print(f"longtls soak: {result['duration_s']} s, {result['mode']}, {result['group']}")
    for name, d in result["directions"].items():
        status = "intact" if d["intact"] else "LOST/CORRUPTED"
        print(f"  {name}: {d['sent_bytes']:,} bytes sent, {d['received_bytes']:,} received "
              f"({d['mb_per_s']} MB/s), sha256 {d['sha256_received'][:16]}... {status}")
    for name, u in result["updates"].items():
        print(f"  {name} updates: {u['completed']} completed, {u['failed']} failed")
    r = result["rss_kib"]
    print(f"  RSS: {r.get('at_10_percent', 0) / 1024:.1f} MiB at 10% -> {r.get('end', 0) / 1024:.1f} MiB at end "
          f"(growth {r['growth_10_percent_to_end'] / 1024:+.1f} MiB, peak {r.get('peak', 0) / 1024:.1f} MiB)")
    print(f"  fds: {result['fds']['before']} before, {result['fds']['after']} after")
    if result["failures"]:
        print("FAILED:")
        for failure in result["failures"]:
            print(f"  - {failure}")
    else:
        print("OK: nothing lost or corrupted, memory flat, no descriptor leaked")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--update-interval", type=float, default=0.1, help="seconds between updates, per side")
    parser.add_argument("--classic", action="store_true", help="standard KeyUpdate instead of EKU")
    parser.add_argument("--profile", default="draft-13", help="EKU profile (draft-13, draft-2025-10, draft-05)")
    parser.add_argument("--group", default="X25519MLKEM768", help="key exchange group (NamedGroup name)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=16.0,
                        help="largest allowed RSS growth from 10%% of the run to its end (MiB)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.group not in NamedGroup.__members__:
        parser.error(f"unknown group {args.group}")
    result = asyncio.run(soak(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
