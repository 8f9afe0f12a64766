"""Quality control: spot-check sampling and per-class agreement against human labels."""
