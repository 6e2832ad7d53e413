"""Test helpers shared by unit and interop tests.

``pytest`` puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml),
so tests import these as ``from helpers.pki import make_ca`` and
``from helpers.peers import start_process``.
"""
