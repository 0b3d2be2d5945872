"""Splitting the uuid space into contiguous ranges, and stepping keyset cursors through them."""

import uuid

MAX_UUID = uuid.UUID(int=(1 << 128) - 1)


def ranges(
    count: int, *, lo: uuid.UUID | None = None, hi: uuid.UUID | None = None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """`count` inclusive (start, end) ranges covering every uuid exactly once.

    The split points divide lo..hi (default: the whole space) evenly; the first range still
    starts at the smallest uuid and the last ends at the largest, so nothing is left out.
    """
    low = lo.int if lo is not None else 0
    span = (hi.int if hi is not None else MAX_UUID.int) - low + 1
    if span < count:
        low, span = 0, 1 << 128  # too narrow to cut `count` times: share the whole space
    cuts = [low + span * i // count for i in range(1, count)]
    bounds = [0, *cuts, 1 << 128]
    return [(uuid.UUID(int=bounds[i]), uuid.UUID(int=bounds[i + 1] - 1)) for i in range(count)]


def after(value: uuid.UUID) -> uuid.UUID | None:
    """The smallest uuid greater than `value`, or None past the last one."""
    return None if value == MAX_UUID else uuid.UUID(int=value.int + 1)
