"""What the machine running evsim has. A leaf module (no evsim imports), so the readers and
the data loaders, which :mod:`evsim.memory` itself imports, can ask it too."""
from __future__ import annotations

import os


def physical_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
