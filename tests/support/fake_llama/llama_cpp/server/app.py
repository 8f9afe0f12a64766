"""Importable like the real server's app module (provisioning imports it as a check)."""
