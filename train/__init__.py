"""LoRA fine-tuning, merge, evaluation and promotion."""
