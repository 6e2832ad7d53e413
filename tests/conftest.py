"""Shared pytest fixtures: a cached throwaway PKI and PEM files for peers.

    def test_x(pki):
        bundle = pki("ecdsa-p256")          # Pki(ca, server, client), cached per session
        bundle.server.cert, bundle.server.key

    def test_y(tmp_pki_files):
        files = tmp_pki_files("ed25519")    # PkiFiles written under tmp_path
        files.server.chain, files.server.key, files.ca

Everything under tests/interop/ is marked ``interop`` automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.pki import Pki, PkiFiles, make_pki

INTEROP_DIR = Path(__file__).parent / "interop"


class PkiCache:
    """Session-wide factory: one CA + server + client per key type, made once.

    ``pki(key_type, ca_key_type=...)`` returns the same Pki for the same
    arguments; use helpers.pki directly for one-off certificates (expired,
    odd names, intermediates).
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Pki] = {}

    def __call__(self, key_type: str, *, ca_key_type: str | None = None) -> Pki:
        cache_key = (key_type, ca_key_type or key_type)
        if cache_key not in self._cache:
            self._cache[cache_key] = make_pki(key_type, ca_key_type=cache_key[1])
        return self._cache[cache_key]


@pytest.fixture(scope="session")
def pki() -> PkiCache:
    return PkiCache()


@pytest.fixture
def tmp_pki_files(pki: PkiCache, tmp_path: Path) -> Callable[..., PkiFiles]:
    """``tmp_pki_files(key_type, ca_key_type=None)`` writes that key type's
    cached PKI as PEM files into this test's tmp_path and returns their paths."""

    def write(key_type: str, *, ca_key_type: str | None = None) -> PkiFiles:
        directory = tmp_path / f"pki-{key_type}-{ca_key_type or key_type}"
        return pki(key_type, ca_key_type=ca_key_type).write_pem(directory)

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEROP_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.interop)
