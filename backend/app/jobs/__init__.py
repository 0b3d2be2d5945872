"""The migration engine and its job machinery.

engine    the rules: which sessions and items, validation, duplicates, one batch as SQL
rollback  removing what a job created, sparing goals changed since
store     every SQL statement on the job tables (state, lease, stats, findings, audit)
runner    running a job: partitions in parallel, heartbeats, cancel, shutdown, resume
"""
