"""The running task, looked up in C on every Python version supported."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["task_of"]

#: `task_of(loop)`: the task running on `loop`, or `None`. Read on every request (the attempt's
#: deadline, the backend's close tracking, a hedged call's race). `asyncio.current_task` is C
#: from Python 3.12; 3.11's is a Python function around one dict lookup, about 1,000
#: instructions a call under callgrind, so on 3.11 the lookup is called directly.
task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
if sys.version_info >= (3, 12):  # pragma: no cover (the tests run on one version)
    task_of = asyncio.current_task
else:  # pragma: no cover
    task_of = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
