"""The two-party subset of MLS (RFC 9420) that MLS mode runs on (docs/mls.md)."""
