"""Adaptive batch sizes: toward the target duration, a bounded step at a time; timeouts halve."""

from app.jobs.pacing import Sizer


def _sizer(size=1000, adaptive=True, **kw) -> Sizer:
    params = {"target_seconds": 0.3, "smallest": 50, "largest": 10000, "step": 1.5} | kw
    return Sizer(size=size, adaptive=adaptive, **params)


def test_a_fast_full_batch_grows_by_at_most_the_step():
    sizer = _sizer()
    assert sizer.took(0.01, 1000) == 1500  # 30x under target, capped at 1.5x


def test_a_slow_batch_shrinks_by_at_most_the_step():
    sizer = _sizer()
    assert sizer.took(3.0, 1000) == 667


def test_near_the_target_the_size_moves_in_proportion():
    sizer = _sizer()
    assert sizer.took(0.25, 1000) == 1200
    assert sizer.took(0.4, 1200) == 900


def test_a_short_batch_does_not_grow_it():
    # The end of a partition went through 120 rows in no time: nothing learnt about 1000.
    sizer = _sizer()
    assert sizer.took(0.001, 120) == 1000
    assert sizer.took(1.0, 120) == 667  # but a slow short batch still shrinks it


def test_bounds_hold_both_ways_and_at_the_start():
    assert _sizer(size=20).size == 50
    assert _sizer(size=20, adaptive=False).size == 20
    sizer = _sizer(size=9000)
    assert sizer.took(0.001, 9000) == 10000
    sizer = _sizer(size=60)
    assert sizer.took(10.0, 60) == 50


def test_a_timeout_halves_down_to_the_smallest():
    sizer = _sizer(size=1000)
    assert [sizer.timed_out() for _ in range(6)] == [500, 250, 125, 62, 50, 50]


def test_fixed_sizes_never_change():
    sizer = _sizer(size=1000, adaptive=False)
    assert sizer.took(0.001, 1000) == 1000
    assert sizer.took(30.0, 1000) == 1000
    assert sizer.timed_out() == 1000


def test_converges_on_a_linear_cost():
    # 0.1 ms per row plus 20 ms per batch: the size settles where a batch takes 0.3 s.
    sizer = _sizer(size=50)
    for _ in range(40):
        size = sizer.size
        sizer.took(0.02 + 0.0001 * size, size)
    assert abs(0.02 + 0.0001 * sizer.size - 0.3) < 0.02


def test_a_batch_drawn_for_the_size_before_counts_by_the_rows_it_went_through():
    # The runner draws a batch's bounds during the batch before it, so the batch after a
    # change still holds the old size: it is full for the size it asked for, and what it says
    # about the time per row holds.
    sizer = _sizer()
    assert sizer.took(0.1, 1000) == 1500
    assert sizer.took(0.1, 1000, asked=1000) == 2250  # 3,000 would take 0.3 s; one step
    assert sizer.took(0.6, 1500, asked=1500) == 1500  # 750 would: 1/1.5 of 2,250 at most
    assert sizer.took(0.001, 120, asked=1500) == 1500  # a partition's end still does not grow it


def test_a_halving_is_flagged_until_the_next_batch():
    sizer = _sizer()
    sizer.timed_out()
    assert sizer.halved and sizer.size == 500
    sizer.took(0.3, 500)
    assert not sizer.halved
    fixed = _sizer(adaptive=False)
    fixed.timed_out()
    assert not fixed.halved and fixed.size == 1000
