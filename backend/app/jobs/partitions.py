"""Splitting the uuid space into contiguous ranges, and stepping keyset cursors through them."""

import uuid

MAX_UUID = uuid.UUID(int=(1 << 128) - 1)


def ranges(count: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """`count` inclusive (start, end) ranges covering every uuid exactly once."""
    step = (1 << 128) // count
    bounds = [i * step for i in range(count)] + [1 << 128]
    return [(uuid.UUID(int=bounds[i]), uuid.UUID(int=bounds[i + 1] - 1)) for i in range(count)]


def after(value: uuid.UUID) -> uuid.UUID | None:
    """The smallest uuid greater than `value`, or None past the last one."""
    return None if value == MAX_UUID else uuid.UUID(int=value.int + 1)
