"""prelabel: LLM pre-annotation, review and active learning for Label Studio."""

__version__ = "0.1.0"
