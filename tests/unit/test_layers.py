"""The import graph of src/longtls only looks down, and has no cycle (issue 10).

Every ``import`` and ``from ... import`` in every module counts: relative and
absolute, at module level, under ``if TYPE_CHECKING:`` and inside functions.
A type-only import still ties a lower layer to a higher one's names, and an
import hidden in a function is a cycle dodged, not a cycle removed.

The layer order is the table below, lowest first (docs/architecture.md draws
it).  A module may import its own layer and the layers below it, never one
above; a module in no layer fails the test, so a new module is placed on
purpose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import longtls

PACKAGE = "longtls"
SOURCE = Path(longtls.__file__).resolve().parent

Layers = tuple[tuple[str, frozenset[str]], ...]

# Lowest first.  A module belongs to the layer that lists the first component
# of its name under longtls ("handshake" covers handshake/*; "__init__" is the
# package itself).
LAYERS: Layers = (
    # The vocabulary every layer speaks: code points, the exceptions (each
    # carrying its alert), the frozen event dataclasses.  Data, no behaviour.
    ("foundation", frozenset({"__init__", "constants", "errors", "events"})),
    # Bounds-checked codecs, one dataclass per message.  RFC 8879 certificate
    # compression is a codec of the CompressedCertificate message.
    ("wire", frozenset({"wire", "certcompress"})),
    # Suites, groups, key schedule, signatures, certificate verification; the
    # key log is the one place secrets leave (NSS key log format).
    ("crypto", frozenset({"crypto", "keylog"})),
    # Data and policy only: Configuration and the external PSKs it holds.
    # Below the record layer, so it may carry record policy (padding, limits)
    # but can never import a state machine.
    ("config", frozenset({"config", "psk", "sni"})),
    # The two-party subset of MLS (RFC 9420): codec, cipher suites and HPKE,
    # ratchet tree, key schedule, group state.  Key management only: the MLS
    # channel's record protection is the record layer's, its connection the
    # connection layer's.
    ("mls", frozenset({"mls"})),
    # TLS records (next: DTLS records with epochs and ACKs, the MLS channel's
    # record protection).
    ("record", frozenset({"record"})),
    # The engines, the host Protocol they see their connection through, and
    # every post-handshake protocol (KeyUpdate, EKU, post-handshake auth;
    # next: Exported Authenticators, Certificate Update).
    ("handshake", frozenset({"handshake", "eku"})),
    # The sans-I/O facade: public API, dispatch, events, closing.
    ("connection", frozenset({"connection", "connection_core", "dtls_connection", "mls_connection"})),
    # The only code that does I/O: asyncio, and the metrics it feeds.
    ("aio", frozenset({"aio", "metrics"})),
    # Programs built on aio: the tunnel, the demo, the PKI generator, the
    # credential file watcher (certificate renewal without restart).
    ("applications", frozenset({"tunnel", "tunnel_udp", "demo", "certs", "credentials", "capture", "connlog"})),
    # The command line, and `python -m longtls` (__main__), which runs it.
    ("cli", frozenset({"cli", "__main__"})),
)


@dataclass(frozen=True)
class Import:
    importer: str  # module names relative to longtls: "handshake.client"
    imported: str
    where: str  # "src/longtls/handshake/client.py:52"


def check_layers(imports: Iterable[Import], modules: Iterable[str], layers: Layers = LAYERS) -> list[str]:
    """Everything wrong with an import graph: unplaced modules, upward imports, cycles."""
    imports = list(imports)
    rank = {member: (i, name) for i, (name, members) in enumerate(layers) for member in members}

    def layer(module: str) -> tuple[int, str] | None:
        return rank.get(module.split(".")[0])

    problems = [f"{m}: in no layer (add it to LAYERS in tests/unit/test_layers.py)"
                for m in sorted(set(modules)) if layer(m) is None]
    for i in imports:
        low, high = layer(i.importer), layer(i.imported)
        if low and high and low[0] < high[0]:
            problems.append(f"{i.where}: {i.importer} ({low[1]}) imports {i.imported} "
                            f"({high[1]}), a higher layer")
    for cycle in _cycles(imports):
        sites = "".join(f"\n    {i.where}: {i.importer} -> {i.imported}" for i in imports
                        if i.importer in cycle and i.imported in cycle)
        problems.append(f"import cycle among {', '.join(sorted(cycle))}:{sites}")
    return problems


def _cycles(imports: list[Import]) -> list[frozenset[str]]:
    """The modules that reach each other, grouped (each group is one cycle or more)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.importer != i.imported:
            graph.setdefault(i.importer, set()).add(i.imported)

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {m: reachable(m) for m in graph}
    groups = {frozenset(m for m in reach[n] if n in reach.get(m, ())) for n in graph if n in reach[n]}
    return sorted(groups, key=sorted)


def imports_of(source: str, module: str, is_package: bool, known: set[str], where: str) -> list[Import]:
    """Every longtls import in one module's source, wherever it stands in the file.

    ``module`` is relative to longtls ("__init__" for the package itself);
    ``known`` holds every module's name, so ``from .x import y`` is an import of
    module ``x.y`` when there is one, else of ``x``.
    """
    parts = [] if module == "__init__" else module.split(".")
    package = parts if is_package else parts[:-1]

    def resolve(stem: str, name: str) -> str:
        full = f"{stem}.{name}".strip(".")
        return full if full in known else stem or "__init__"

    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [resolve(_relative(a.name), "") for a in node.names if _ours(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb level - 1 packages from this one
                base = package[: len(package) - node.level + 1]
                stem = ".".join([*base, node.module or ""]).strip(".")
            elif node.module and _ours(node.module):
                stem = _relative(node.module)
            else:
                continue  # another library
            targets = [resolve(stem, a.name) for a in node.names]
        else:
            continue
        found += [Import(module, t, f"{where}:{node.lineno}") for t in targets if t != module]
    return list(dict.fromkeys(found))  # one per statement and module, in order


def _ours(dotted: str) -> bool:
    return dotted == PACKAGE or dotted.startswith(PACKAGE + ".")


def _relative(dotted: str) -> str:
    return dotted.removeprefix(PACKAGE).removeprefix(".")


def _module_name(file: Path, root: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "__init__"


def source_graph(root: Path = SOURCE) -> tuple[list[Import], set[str]]:
    """The imports between longtls' modules, and every module's name."""
    files = sorted(root.rglob("*.py"))
    modules = {_module_name(f, root) for f in files}
    imports: list[Import] = []
    for file in files:
        imports += imports_of(file.read_text(encoding="utf-8"), _module_name(file, root),
                              file.name == "__init__.py", modules,
                              f"src/{PACKAGE}/{file.relative_to(root)}")
    return imports, modules


# ---------------------------------------------------------------- the tests


def test_longtls_imports_only_look_down_and_never_in_a_circle() -> None:
    imports, modules = source_graph()
    problems = check_layers(imports, modules)
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_the_reader_sees_every_kind_of_import() -> None:
    source = (
        "from __future__ import annotations\n"
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "from ..errors import DecodeError\n"  # 4: relative, up one package
        "from . import extensions as X\n"  # 5: a sibling module by name
        "from .messages import Hello\n"  # 6: a name from a sibling
        "import longtls.crypto.suites\n"  # 7: absolute
        "from longtls import connection\n"  # 8: absolute, module by name
        "if TYPE_CHECKING:\n"
        "    from ..config import Configuration\n"  # 10: type-only
        "def late():\n"
        "    from .. import __version__\n"  # 12: in a function, the package itself
        "    from cryptography import x509\n"
    )
    known = {"__init__", "errors", "wire", "wire.extensions", "wire.messages", "wire.codec",
             "crypto", "crypto.suites", "connection", "config"}
    found = imports_of(source, "wire.codec", False, known, "codec.py")
    assert [(i.imported, i.where) for i in found] == [
        ("errors", "codec.py:4"),
        ("wire.extensions", "codec.py:5"),
        ("wire.messages", "codec.py:6"),
        ("crypto.suites", "codec.py:7"),
        ("connection", "codec.py:8"),
        ("config", "codec.py:10"),
        ("__init__", "codec.py:12"),
    ]
    # a package's own __init__ resolves "." to itself
    assert imports_of("from .buffer import Buffer\n", "wire", True, known | {"wire.buffer"},
                      "w.py") == [Import("wire", "wire.buffer", "w.py:1")]


def test_the_checker_flags_a_cycle_an_upward_import_and_an_unplaced_module() -> None:
    layers: Layers = (("low", frozenset({"a", "b"})), ("high", frozenset({"c"})))
    graph = [
        Import("a", "b", "a.py:3"),
        Import("b", "a", "b.py:9"),  # a <-> b, within one layer
        Import("c", "a", "c.py:1"),  # downward: fine
        Import("a", "c", "a.py:7"),  # upward, and closes a -> c -> a
    ]
    problems = check_layers(graph, ["a", "b", "c", "d"], layers)
    assert problems == [
        "d: in no layer (add it to LAYERS in tests/unit/test_layers.py)",
        "a.py:7: a (low) imports c (high), a higher layer",
        "import cycle among a, b, c:\n    a.py:3: a -> b\n    b.py:9: b -> a\n"
        "    c.py:1: c -> a\n    a.py:7: a -> c",
    ]
    # the same graph without the offending edges is clean
    assert check_layers(graph[:1] + graph[2:3], ["a", "b", "c"], layers) == []


def test_the_source_graph_is_read() -> None:
    imports, modules = source_graph()
    edges = {(i.importer, i.imported) for i in imports}
    # a few edges that any shape of longtls has: nothing vacuous passes
    assert {("connection", "config"), ("cli.main", "__init__"), ("wire.buffer", "errors")} <= edges
    assert {"__init__", "constants", "connection", "wire.buffer", "cli.main"} <= modules
