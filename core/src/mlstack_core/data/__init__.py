"""Wine-like data: the packaged summary figures and the seeded row generator built on them."""

from mlstack_core.data.generator import (
    BOUNDS,
    COLUMNS,
    FEATURES,
    TARGET,
    generate_array,
    generate_frame,
    generate_rows,
    load_stats,
    physical_bounds,
)

__all__ = [
    "BOUNDS",
    "COLUMNS",
    "FEATURES",
    "TARGET",
    "generate_array",
    "generate_frame",
    "generate_rows",
    "load_stats",
    "physical_bounds",
]
