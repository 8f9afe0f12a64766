"""Test and benchmark helpers (not shipped in the wheel): stand-ins for faults (``fault_llm``,
``fake_llama``, ``switch_proxy``), test data (``intent_data``, ``flywheel_data``, ``hostile``) and
small utilities (``waiting``, ``browser``, ``compose``, ``backend_proc``). The real servers the
session fixtures start live in ``tests/servers``."""
