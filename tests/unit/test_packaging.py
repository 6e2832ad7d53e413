"""Packaging as a user meets it (issue 14 "Packaging").

The licence and the metadata in pyproject.toml, ``python -m longtls`` and
``--version``, and the proof that matters most: the wheel, built from the
files an sdist would carry, installs into a fresh virtual environment with
cryptography alone (no test tool), and its ``longtls`` script and
``python -m longtls`` both run there.

Decision (the fresh environment): ``python -m venv --without-pip``, then this
environment's pip installs the wheel into it (``pip --python``), resolving
cryptography from the package index this machine's pip is configured with,
as ``pip install longtls`` would for a user. Seeding the new environment with
its own pip would only add ~10 s of ensurepip to the test. With no index
reachable the test fails, never skips (like the interop tests).
"""

from __future__ import annotations

import email.message
import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import longtls

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]

# Nothing `make test` needs may come with a plain install (the `test` extra).
TEST_TOOLS = ("pytest", "hypothesis", "mypy", "ruff", "OpenSSL", "tlslite", "atheris")


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point Python back at this checkout."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _run(
    argv: list[str | Path], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------
# The licence


def _apache_reference_text() -> str:
    """pyca/cryptography's copy of the Apache License 2.0 (a runtime dependency, so always here)."""
    dist = importlib.metadata.distribution("cryptography")
    for file in dist.files or ():
        if file.name == "LICENSE.APACHE":
            return Path(str(dist.locate_file(file))).read_text(encoding="utf-8")
    raise AssertionError("cryptography ships no LICENSE.APACHE to compare LICENSE with")


def test_license_file_is_the_whole_apache_2_0_text() -> None:
    ours = (ROOT / "LICENSE").read_text(encoding="utf-8")
    # The standard text names apache.org with http://; cryptography's copy was
    # edited to https:// -- the only difference allowed.
    reference = _apache_reference_text().replace(
        "https://www.apache.org/", "http://www.apache.org/"
    )
    assert ours == reference
    assert ours.lstrip().startswith("Apache License\n")
    assert "END OF TERMS AND CONDITIONS" in ours


def test_license_metadata_is_an_spdx_expression_with_its_file() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    # PEP 639: a "License ::" classifier next to an SPDX expression is an error.
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


# --------------------------------------------------------------------------
# The rest of the metadata


def test_metadata_readme_classifiers_urls_and_summary() -> None:
    assert PROJECT["readme"] == "README.md"
    classifiers = set(PROJECT["classifiers"])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert [c for c in classifiers if c.startswith("Development Status :: ")]
    assert {
        "Topic :: Security :: Cryptography",
        "Topic :: Internet",
        "Typing :: Typed",
    } <= classifiers
    urls = PROJECT["urls"]
    assert urls and all(url.startswith("https://") for url in urls.values())
    # The summary names what README's "What is implemented" says is built.
    summary = PROJECT["description"]
    for built in ("TLS 1.3", "DTLS 1.3", "Extended Key Update", "Certificate Update", "MLS"):
        assert built in summary


def test_runtime_dependencies_are_cryptography_only() -> None:
    names = [
        dep.split(">")[0].split("=")[0].split("~")[0].strip().lower()
        for dep in PROJECT["dependencies"]
    ]
    assert names == ["cryptography"]
    test_extra = " ".join(PROJECT["optional-dependencies"]["test"]).lower()
    assert "pytest" in test_extra and "mypy" in test_extra


# --------------------------------------------------------------------------
# python -m longtls and --version, in this environment


def test_python_m_longtls_version(tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "longtls", "--version"], cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"longtls {longtls.__version__}\n",
        "",
    )


def test_python_m_longtls_without_a_command_is_the_cli_usage_error(tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "longtls"], cwd=tmp_path)
    assert result.returncode == 2
    # The program names itself longtls, not __main__.py, and asks for a COMMAND.
    assert result.stderr.startswith("longtls: error: ")
    assert "COMMAND" in result.stderr and "__main__" not in result.stderr


def test_longtls_script_version(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "longtls"
    result = _run([script, "--version"], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"longtls {longtls.__version__}\n")
    assert importlib.metadata.version("longtls") == longtls.__version__


# --------------------------------------------------------------------------
# The wheel, in a fresh virtual environment


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of what an sdist carries, so the shared checkout gets no build/ or egg-info."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src" / "longtls",
        source / "src" / "longtls",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = tmp_path / "dist"
    result = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", dist, source],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = dist.glob("longtls-*.whl")
    return wheel


def _wheel_metadata(wheel: Path) -> tuple[email.message.Message, str]:
    prefix = f"longtls-{longtls.__version__}.dist-info/"
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(archive.read(prefix + "METADATA").decode("utf-8"))
        licence = archive.read(prefix + "licenses/LICENSE").decode("utf-8")
        assert "longtls/__main__.py" in archive.namelist()
        assert "longtls/py.typed" in archive.namelist()
    return metadata, licence


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_without_test_tools(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)

    metadata, licence = _wheel_metadata(wheel)
    assert metadata["Name"] == "longtls"
    assert metadata["Version"] == longtls.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert licence == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert str(metadata.get_payload()).startswith("# longtls\n")
    # Requires-Dist without an extra marker is what a plain install pulls.
    runtime = [req for req in metadata.get_all("Requires-Dist") or [] if "extra ==" not in req]
    assert runtime == ["cryptography>=50"]

    venv = tmp_path / "fresh"
    result = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--only-binary",
            ":all:",
            wheel,
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr

    expected = f"longtls {longtls.__version__}\n"
    result = _run([venv / "bin" / "longtls", "--version"], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, expected), result.stderr
    result = _run([python, "-m", "longtls", "--version"], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, expected), result.stderr

    # longtls and cryptography come from the new environment; no test tool is there.
    probe = (
        "import importlib.util, sys, longtls, cryptography\n"
        "print(longtls.__file__)\n"
        "print(cryptography.__file__)\n"
        f"print(','.join(n for n in {TEST_TOOLS!r} if importlib.util.find_spec(n)))\n"
    )
    result = _run([python, "-c", probe], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    longtls_file, cryptography_file, test_tools_found = result.stdout.splitlines()
    assert Path(longtls_file).is_relative_to(venv)
    assert Path(cryptography_file).is_relative_to(venv)
    assert test_tools_found == ""
