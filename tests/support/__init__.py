"""Test and benchmark helpers (not shipped in the wheel)."""
