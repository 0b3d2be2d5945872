"""`make bench`: the goal migration measured against hand-written SQL and the naive script.

    one embedded PostgreSQL, one template database (Alembic, app.demo, VACUUM ANALYZE)
      ├─ clone ─▶ ceiling.py   one INSERT … SELECT: the time to beat, and the row set every
      │                        engine run must reproduce exactly
      ├─ clone ─▶ floor.py     the guide's algorithm, one session and one item at a time
      ├─ clone ─▶ api.py       the engine through the admin API (server.py runs the real server),
      │                        polled every 100 ms; activity.py samples what its connections do
      └─ clone ─▶ explain.py   EXPLAIN (ANALYZE, BUFFERS) of one engine batch and of the ceiling
    cpu.py: CPU seconds per process and the machine's other load; buffers.py: shared_buffers
    hits and misses per measurement.
    run.py drives it all; report.py: docs/benchmarks.json (one entry per BENCH_SESSIONS)
    ─▶ docs/BENCHMARKS.md

Every measurement starts from its own clone of the template, so each sees identical data.
"""
