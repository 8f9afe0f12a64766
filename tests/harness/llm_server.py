"""The harness uses the product's own process management (``prelabel.stack.llm_server``)."""

from prelabel.stack.llm_server import *  # noqa: F403
from prelabel.stack.llm_server import __all__  # noqa: F401
