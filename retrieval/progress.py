"""The one progress-callback type of the library: `callback(done, total)`.

Long operations (indexing, dataset generation, training) call it as work completes, with `done`
counting up to `total` units of that operation (images, steps). The library never draws anything;
the CLI turns these calls into a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]
