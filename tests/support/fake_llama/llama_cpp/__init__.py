"""Broken stand-in for llama-cpp-python (tests only): see ``llama_cpp.server``."""

__version__ = "0.3.36"
