"""Active-learning priority: uncertainty, disagreement, diversity; pool-based simulation."""
