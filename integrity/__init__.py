"""Integrity: hash chains, their verification, signed checkpoints and offline bundles."""
