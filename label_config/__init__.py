"""Labeling configs and guidelines: shipped templates and the code that turns a config into an output schema."""
