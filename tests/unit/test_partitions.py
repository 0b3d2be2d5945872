"""partitions.ranges cuts the uuid space into contiguous slices that cover it exactly once."""

import uuid

import pytest

from app.jobs import partitions

LAST = (1 << 128) - 1


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 1000])
def test_ranges_cover_every_uuid_exactly_once_in_order(count):
    ranges = partitions.ranges(count)
    assert len(ranges) == count
    assert ranges[0][0] == uuid.UUID(int=0)
    assert ranges[-1][1] == uuid.UUID(int=LAST)
    for start, end in ranges:
        assert start <= end
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start.int == end.int + 1  # contiguous: no gap, no overlap
    sizes = [end.int - start.int + 1 for start, end in ranges]
    assert sum(sizes) == 1 << 128
    assert max(sizes) - min(sizes) < count  # even slices; the last takes the remainder


@pytest.mark.parametrize("count", [1, 3, 7])
def test_every_uuid_falls_in_exactly_one_range(count):
    ranges = partitions.ranges(count)
    probes = [0, 1, LAST, LAST - 1, 1 << 127, (1 << 127) - 1]
    probes += [end.int for _, end in ranges] + [start.int for start, _ in ranges]
    for value in probes:
        u = uuid.UUID(int=value)
        assert sum(start <= u <= end for start, end in ranges) == 1, (count, value)


def test_after_steps_to_the_next_uuid_and_stops_past_the_last():
    assert partitions.after(uuid.UUID(int=0)) == uuid.UUID(int=1)
    assert partitions.after(uuid.UUID(int=(1 << 64) - 1)) == uuid.UUID(int=1 << 64)
    assert partitions.after(uuid.UUID(int=LAST)) is None
