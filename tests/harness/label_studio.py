"""The harness uses the product's own process management (``prelabel.stack.label_studio``)."""

from prelabel.stack.label_studio import *  # noqa: F403
from prelabel.stack.label_studio import __all__  # noqa: F401
