"""The harness uses the product's own process management (``prelabel.stack.ports``)."""

from prelabel.stack.ports import *  # noqa: F403
from prelabel.stack.ports import __all__  # noqa: F401
