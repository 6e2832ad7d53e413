"""Machine-readable test vectors taken from the specification texts in /work/shared/specs.

Everything under this package is test-only and deliberately independent of the longtls
implementation: it must never import from ``longtls``.
"""
