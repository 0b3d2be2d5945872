"""Batch sizes tuned to time: each batch aims at a target duration, within bounds.

A fixed batch_size is right for one database on one day. Here the size a batch asks for follows
the time the last one took: its rows × target / seconds, moved at most `step` times per batch (one
slow batch, or a fast one on warm caches, does not swing it), kept within [smallest, largest].
A batch that hit a statement or lock timeout halves at once: the same size would meet the same
timeout. The target is short (0.3 s by default) so the locks and the CPU a batch holds are given
back often: that is what lets clinicians' statements in between.

Sizes never change what a run does, only where its batches end: batches hold whole patients, so
any size gives the same goals, counters and findings (engine.py). A dry run, sized its own way,
predicts a real run exactly.
"""

from dataclasses import dataclass


@dataclass
class Sizer:
    """The next batch size of one partition; fixed unless `adaptive`."""

    size: int
    adaptive: bool
    target_seconds: float
    smallest: int
    largest: int
    step: float

    halved: bool = False

    def __post_init__(self) -> None:
        if self.adaptive:
            self.size = self._bounded(self.size)

    def took(self, seconds: float, processed: int, asked: int | None = None) -> int:
        """Learn from a committed batch; return the size of the next one.

        The size that would have taken the target is the rows processed × target / seconds;
        the next size moves toward it by at most `step`. `asked` is the size the batch's bounds
        were drawn for (the runner draws the next batch's bounds during this one, with the size
        of the moment, so a new size shows from the batch after). A batch that went through
        fewer rows than it asked for (the end of a partition) says nothing about a larger one,
        so only full batches may grow it.
        """
        self.halved = False
        if not self.adaptive or seconds <= 0 or processed <= 0:
            return self.size
        ideal = processed * self.target_seconds / seconds
        if ideal > self.size and processed < (self.size if asked is None else asked):
            return self.size
        self.size = self._bounded(
            round(min(max(ideal, self.size / self.step), self.size * self.step))
        )
        return self.size

    def timed_out(self) -> int:
        """A statement or lock timeout ended the batch: halve before it is tried again.

        `halved` tells the runner not to reuse bounds drawn for the larger size.
        """
        if self.adaptive:
            self.size = self._bounded(self.size // 2)
            self.halved = True
        return self.size

    def _bounded(self, size: int) -> int:
        return min(max(size, self.smallest), self.largest)
