"""longtls decrypt CAPTURE --keylog FILE: every TLS 1.3 and DTLS 1.3 record of a capture, decrypted.

Reads a pcap or pcapng file (with Wireshark's tshark, which must be
installed: TCP streams are reassembled by longtls from tshark's packets,
retransmissions and out-of-order segments included), finds each connection
by its ClientHello, decrypts its records with the secrets of the key log
(SSLKEYLOGFILE format, as --keylog writes it), following KeyUpdates and
Extended Key Updates in every EKU profile, and prints a transcript: one line
per record with its time, sender, generation, record type, handshake message
names and content (application data as text when it is printable, else hex).

Generation N is the one protected by [CLIENT|SERVER]_TRAFFIC_SECRET_N;
plaintext and handshake-key records are generation 0 (see the "keys" of
--json).  A connection whose secrets are not in the key log is listed as
such.  --json prints one object per record:
  {"time": <epoch seconds>, "connection": <n>, "from": "client"|"server",
   "generation": <n>, "content_type": "handshake"|"application_data"|"alert"|...,
   "messages": [<handshake message names>], "data_hex": <decrypted content>,
   "keys": "plaintext"|"handshake"|"application", "sequence_number": <n>,
   "epoch": <n> (DTLS only)}
and the connections without secrets, and what could not be decrypted, as
"longtls decrypt: ..." lines on stderr.

Exit status: 0, also when some connection could not be decrypted; 2 for a
capture or key log that cannot be read (one line on stderr).  Details:
docs/decrypt.md.

  longtls decrypt capture.pcapng --keylog keys.log
  longtls decrypt capture.pcapng --keylog keys.log --json --connection 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, TextIO

from ..capture.decrypt import (
    APPLICATION,
    Connection,
    KeyLog,
    Record,
    content_type_name,
    decrypt_capture,
)
from ..capture.streams import CaptureError, format_address, read_capture
from ..constants import AlertDescription, ContentType
from . import common

DESCRIPTION = __doc__

#: How many bytes of a non-application record's content the text transcript shows.
_PREVIEW = 32


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "decrypt", help="decrypt the TLS/DTLS records of a capture with a key log, across key updates",
        description=DESCRIPTION, parents=parents,
    )
    p.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file (read with tshark)")
    p.add_argument("--keylog", required=True, metavar="FILE", help="key log (SSLKEYLOGFILE format) with the secrets")
    p.add_argument("--json", action="store_true", help="one JSON object per record on stdout")
    p.add_argument(
        "--connection", type=common.positive_int, metavar="N", action="append",
        help="only connection N (numbered from 1 in capture order; repeatable)",
    )
    p.add_argument("--hex", action="store_true", help="show application data as hex, never as text")
    p.add_argument("--tshark", metavar="PATH", help="the tshark to run (default: tshark on PATH)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        keylog = KeyLog.read(args.keylog)
    except OSError as exc:
        return _fail(f"cannot read the key log {args.keylog}: {exc.strerror or exc}")
    try:
        with open(args.capture, "rb"):
            pass
        capture = read_capture(args.capture, args.tshark)
    except OSError as exc:
        return _fail(f"cannot read the capture {args.capture}: {exc.strerror or exc}")
    except CaptureError as exc:
        return _fail(str(exc))
    if capture.warning:
        print(f"{common.PROG} decrypt: warning: {capture.warning}", file=sys.stderr)
    connections = decrypt_capture(capture, keylog)
    if args.connection:
        wanted = set(args.connection)
        connections = [c for c in connections if c.number in wanted]
    out = sys.stdout
    for connection in connections:
        if args.json:
            for record in connection.records:
                out.write(json.dumps(record.to_json()) + "\n")
            for note in _notes(connection):
                print(f"{common.PROG} decrypt: connection {connection.number}: {note}", file=sys.stderr)
        else:
            write_transcript(out, connection, always_hex=args.hex)
    if not connections and not args.json:
        out.write("no TLS or DTLS connection in the capture\n")
    out.flush()
    return 0


def _fail(message: str) -> int:
    print(f"{common.PROG}: error: {message}", file=sys.stderr)
    return 2


def _notes(connection: Connection) -> list[str]:
    return list(connection.notes)


def write_transcript(out: TextIO, connection: Connection, *, always_hex: bool = False) -> None:
    """The text form: a heading per connection, one line per record."""
    facts = [f"client_random {connection.client_random.hex()}"]
    if connection.cipher_suite is not None:
        facts.append(connection.cipher_suite.name)
    if connection.eku_profile is not None:
        facts.append(f"EKU {connection.eku_profile.value}")
    out.write(
        f"connection {connection.number}: {connection.transport} {format_address(connection.client)} -> "
        f"{format_address(connection.server)}, {', '.join(facts)}\n"
    )
    for note in connection.notes:
        out.write(f"  ({note})\n")
    for record in connection.records:
        out.write(format_record(record, always_hex=always_hex) + "\n")
    out.write("\n")


def format_record(record: Record, *, always_hex: bool = False) -> str:
    when = datetime.datetime.fromtimestamp(record.time, datetime.UTC).strftime("%H:%M:%S.%f")
    keys = f"gen {record.generation}" if record.keys == APPLICATION else record.keys
    if record.epoch is not None:
        keys += f" e{record.epoch}"
    kind = content_type_name(record.content_type)
    return f"  {when} {record.sender:6} {keys:14} {kind:18} {describe_content(record, always_hex)}".rstrip()


def describe_content(record: Record, always_hex: bool = False) -> str:
    data = record.data
    if record.content_type == ContentType.HANDSHAKE:
        return ", ".join(record.messages)
    if record.content_type == ContentType.ALERT and len(data) == 2:
        try:
            name = AlertDescription(data[1]).name
        except ValueError:
            name = f"alert {data[1]}"
        return f"{'fatal' if data[0] == 2 else 'warning'} {name}"
    if record.content_type == ContentType.APPLICATION_DATA:
        if not always_hex:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if text and all(c.isprintable() or c in "\r\n\t" for c in text):
                return f"{len(data)} bytes: {json.dumps(text, ensure_ascii=False)}"
        return f"{len(data)} bytes: {data.hex()}"
    shown = data[:_PREVIEW].hex()
    return f"{len(data)} bytes: {shown}{'...' if len(data) > _PREVIEW else ''}"
