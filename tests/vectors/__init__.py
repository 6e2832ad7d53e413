"""Machine-readable test vectors taken from the specification texts in ../shared/specs (beside the checkout).

Everything under this package is test-only and deliberately independent of the longtls
implementation: it must never import from ``longtls``.
"""
