"""The harness uses the product's own process management (``prelabel.stack.processes``)."""

from prelabel.stack.processes import *  # noqa: F403
from prelabel.stack.processes import __all__  # noqa: F401
