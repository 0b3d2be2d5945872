"""partitions.ranges cuts the uuid space into contiguous slices that cover it exactly once."""

import uuid

import pytest

from app.jobs import partitions

LAST = (1 << 128) - 1


def _covers_every_uuid_once(ranges, count):
    assert len(ranges) == count
    assert ranges[0][0] == uuid.UUID(int=0)
    assert ranges[-1][1] == uuid.UUID(int=LAST)
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start.int == end.int + 1  # contiguous: no gap, no overlap
    sizes = [end.int - start.int + 1 for start, end in ranges]
    assert min(sizes) >= 1 and sum(sizes) == 1 << 128  # no empty slice


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 1000])
def test_ranges_cover_every_uuid_exactly_once_in_order(count):
    ranges = partitions.ranges(count)
    _covers_every_uuid_once(ranges, count)
    sizes = [end.int - start.int + 1 for start, end in ranges]
    assert max(sizes) - min(sizes) <= 1  # even slices of the whole space


@pytest.mark.parametrize("count", [1, 3, 7])
def test_every_uuid_falls_in_exactly_one_range(count):
    ranges = partitions.ranges(count)
    probes = [0, 1, LAST, LAST - 1, 1 << 127, (1 << 127) - 1]
    probes += [end.int for _, end in ranges] + [start.int for start, _ in ranges]
    for value in probes:
        u = uuid.UUID(int=value)
        assert sum(start <= u <= end for start, end in ranges) == 1, (count, value)


V7 = 0x0190_0000_0000_7000_8000_0000_0000_0000  # a time-ordered id, as migrated goals get


@pytest.mark.parametrize(
    ("count", "lo", "hi"),
    [
        (2, V7, V7 + 10**9),
        (3, V7, V7 + 2),  # a span barely larger than the count
        (7, V7, V7 + 3),  # narrower than the count
        (3, V7, V7),  # one goal
        (2, LAST, LAST),
        (4, 0, LAST),
        (2, 0, 0),  # a span at the nil uuid, smaller than the count
    ],
)  # fmt: skip
def test_ranges_over_a_span_still_cover_every_uuid_and_split_the_span(count, lo, hi):
    ranges = partitions.ranges(count, lo=uuid.UUID(int=lo), hi=uuid.UUID(int=hi))
    _covers_every_uuid_once(ranges, count)
    # Every id of the span lands in exactly one slice, and a wide span is shared out evenly.
    for value in {lo, hi, (lo + hi) // 2}:
        u = uuid.UUID(int=value)
        assert sum(start <= u <= end for start, end in ranges) == 1
    if hi - lo + 1 >= 1000 * count:
        inside = [min(end.int, hi) - max(start.int, lo) + 1 for start, end in ranges]
        assert max(inside) - min(inside) <= 1


def test_after_steps_to_the_next_uuid_and_stops_past_the_last():
    assert partitions.after(uuid.UUID(int=0)) == uuid.UUID(int=1)
    assert partitions.after(uuid.UUID(int=(1 << 64) - 1)) == uuid.UUID(int=1 << 64)
    assert partitions.after(uuid.UUID(int=LAST)) is None
