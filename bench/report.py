"""docs/benchmarks.json (the latest run of each data mix and size) rendered as docs/BENCHMARKS.md.

Each run replaces its own (mix, size, server) entry and renders the whole page again, so results
at 200k, 1M and 10M sessions sit side by side per mix and their growth is computed. The server
is PostgreSQL's stock settings, or the ones BENCH_PG_SETTINGS gave (a table of its own). The
hand-written notes between the NOTES markers survive every rendering.
"""

import json
from pathlib import Path

from app import demo
from bench import buffers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.json"
PAGE = ROOT / "docs" / "BENCHMARKS.md"
NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"

# (key in a run's "ratios", label, bar, True when higher is better)
BARS = (
    ("real_vs_ceiling_throughput", "real run throughput / ceiling throughput", 1.2, True),
    ("real_vs_floor_throughput", "real run throughput / naive floor throughput", 20.0, True),
    ("dry_vs_ceiling_time", "dry run time / ceiling time", 0.25, False),
    ("verify_vs_ceiling_time", "verify time / ceiling time", 0.25, False),
    ("poll_p99_ms", "status poll p99 while running (ms)", 50.0, False),
    ("rss_peak_mb", "server peak RSS (MB)", 200.0, False),
)
# (from size, to size, bar on real-run time growth); RSS may grow at most RSS_BAR from 200k.
GROWTH = ((200_000, 1_000_000, 5.5), (1_000_000, 10_000_000, 11.0))
RSS_FROM, RSS_BAR = 200_000, 1.1
MIX_WORDS = {
    "duplicate-heavy": "patients get the same tasks session after session: about half the "
    "items are duplicates",
    "insert-heavy": "clinicians date most items: about nine in ten items become goals",
}


def server(result: dict) -> str:
    """The server beyond the embedded one with stock settings ("" for that one).

    Another server (BENCH_DATABASE_URL) is named by its version; settings given are listed.
    """
    settings = result["data"].get("server_settings") or {}
    parts = [f"{name}={value}" for name, value in sorted(settings.items())]
    if result["data"].get("external_server"):
        parts.insert(0, "PostgreSQL " + result["data"]["server_version"].split()[0])
    return ",".join(parts)


def key(mix: str, sessions: int, server_: str = "") -> str:
    return f"{mix}/{sessions}" + (f"/{server_}" if server_ else "")


def load() -> dict[str, dict]:
    """Every (mix, size)'s latest results, keyed "mix/sessions"."""
    if not RESULTS.exists():
        return {}
    return {k: v for k, v in json.loads(RESULTS.read_text()).items() if "/" in k}


def _order(item: tuple[str, dict]) -> tuple[int, str, int]:
    mix, sessions = item[0].split("/")[:2]
    return list(demo.MIXES).index(mix), server(item[1]), int(sessions)


def save(result: dict) -> dict[str, dict]:
    """Store this run's results under its mix and size; return all results."""
    results = load()
    results[key(result["data"]["mix"], result["data"]["sessions"], server(result))] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(sorted(results.items(), key=_order)), indent=1))
    return results


def _of_mix(results: dict[str, dict], mix: str, server_: str = "") -> dict[int, dict]:
    return {
        r["data"]["sessions"]: r
        for r in results.values()
        if r["data"]["mix"] == mix and server(r) == server_
    }


def _notes() -> str:
    if PAGE.exists():
        page = PAGE.read_text()
        if NOTES_START in page and NOTES_END in page:
            return page[page.index(NOTES_START) : page.index(NOTES_END) + len(NOTES_END)]
    return f"{NOTES_START}\n_No notes yet._\n{NOTES_END}"


def _n(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _verdict(value: float | None, bar: float, higher: bool) -> str:
    if value is None:
        return "–"
    met = value >= bar if higher else value <= bar
    if met:
        return "met"
    missed = (bar / value if higher else value / bar) if value else float("inf")
    return f"**missed** ({missed:.2f}× off)"


def growth(results: dict[str, dict], mix: str, server_: str = "") -> list[dict]:
    """Time and RSS growth between the sizes of GROWTH that this mix has both of."""
    sizes = _of_mix(results, mix, server_)
    out = []
    for small_n, large_n, bar in GROWTH:
        small, large = sizes.get(small_n), sizes.get(large_n)
        if not small or not large:
            continue
        base = sizes.get(RSS_FROM, small)
        out.append(
            {
                "from": small_n,
                "to": large_n,
                "bar": bar,
                "real_time_ratio": large["real"]["seconds"] / small["real"]["seconds"],
                "dry_time_ratio": large["dry"]["seconds"] / small["dry"]["seconds"],
                "ceiling_time_ratio": large["ceiling"]
                and small["ceiling"]
                and large["ceiling"]["seconds"] / small["ceiling"]["seconds"],
                "rss_from": base["data"]["sessions"],
                "rss_ratio": large["real"]["rss_peak_mb"] / base["real"]["rss_peak_mb"],
                "cpu_ratio": (
                    large["real"]["profile"]["backend_cpu_seconds"]
                    / small["real"]["profile"]["backend_cpu_seconds"]
                ),
                "ceiling_cpu_ratio": large["ceiling"]
                and small["ceiling"]
                and large["ceiling"]["cpu_seconds"] / small["ceiling"]["cpu_seconds"],
                "data_ratio": large["data"]["items"] / small["data"]["items"],
                "misses": {
                    r["data"]["sessions"]: buffers.misses(r["real"]["buffers"])
                    / r["real"]["stats"]["goals_created"]
                    for r in (small, large)
                    if "buffers" in r["real"]
                },
            }
        )
    return out


def growth_lines(results: dict[str, dict], mix: str, server_: str = "") -> list[str]:
    """The growth bars of one mix on one server, as the console shows them."""
    lines = []
    for g in growth(results, mix, server_):
        span = f"{_size(g['to'])} / {_size(g['from'])}"
        lines.append(
            f"{'real run time ' + span:<48} {g['real_time_ratio']:>9.2f}   bar <= {g['bar']}"
        )
        rss_span = f"{_size(g['to'])} / {_size(g['rss_from'])}"
        lines.append(f"{'peak RSS ' + rss_span:<48} {g['rss_ratio']:>9.2f}   bar <= {RSS_BAR}")
    return lines


def _size(sessions: int) -> str:
    if sessions % 1_000_000 == 0:
        return f"{sessions // 1_000_000}M"
    if sessions % 1_000 == 0:
        return f"{sessions // 1_000}k"
    return f"{sessions:,}"


def _durability(results: dict[str, dict]) -> str:
    settings = {
        (r["data"].get("fsync"), r["data"].get("synchronous_commit")) for r in results.values()
    }
    if settings == {("on", "on")}:
        return (
            "on an embedded PostgreSQL with its default durability: **fsync, synchronous_commit "
            "and full_page_writes on**, as users run it"
        )
    return (
        "on an embedded PostgreSQL; each size's section states its fsync and synchronous_commit "
        "(the default is durable, as users run it; `BENCH_DURABLE=0` turns them off)"
    )


def _sized_sentence(results: dict[str, dict]) -> str:
    if not any(server(r) for r in results.values()):
        return ""
    return (
        " Each mix's first table runs PostgreSQL's stock memory settings (shared_buffers 128 MB, "
        "max_wal_size 1 GB); a table headed *sized for the machine* runs the same durable "
        "server with `BENCH_PG_SETTINGS`, as a deployment would size it, and a table headed "
        "with another PostgreSQL version runs that server (`BENCH_DATABASE_URL`)."
    )


def render(results: dict[str, dict]) -> str:
    """The whole page."""
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/`, from `docs/benchmarks.json`): both data mixes at "
        "200k sessions; `BENCH_SESSIONS=1000000 make bench` adds the 1M column. The 10M column "
        "is recorded once, outside the default run (see the notes). Every measurement runs on "
        f"its own copy of the same demo database, {_durability(results)}. The machines are "
        "shared and noisy: the ratios, measured side by side in one run, are what count."
        + _sized_sentence(results),
        "",
    ]
    for mix in demo.MIXES:
        for server_ in sorted({server(r) for r in results.values()}):
            sizes = _of_mix(results, mix, server_)
            if sizes:
                out += _mix_table(mix, server_, sizes, results)
    out += [_notes(), ""]
    for s in results.values():
        out += _size_section(s)
    return "\n".join(out).rstrip() + "\n"


def _mix_table(
    mix: str, server_: str, sizes: dict[int, dict], results: dict[str, dict]
) -> list[str]:
    runs = [sizes[n] for n in sorted(sizes)]
    if server_.startswith("PostgreSQL "):
        out = [
            f"### The {mix} mix on {server_}",
            "",
            f"`BENCH_DATABASE_URL`: {server_} installed from Debian's packages on the same "
            "machine, as configured there (stock settings, durable), measured in the same way.",
            "",
        ]
    elif server_:
        out = [
            f"### The {mix} mix on a server sized for the machine",
            "",
            f"`BENCH_PG_SETTINGS={server_}`: the same durable server with its memory and "
            "checkpoint distance sized as a deployment would size them (see the notes).",
            "",
        ]
    else:
        out = [
            f"## The {mix} mix",
            "",
            f"`python -m app.demo --mix {mix}`: {MIX_WORDS.get(mix, mix)}.",
            "",
        ]
    out += [
        "| bar | target | "
        + " | ".join(f"{_size(s['data']['sessions'])} sessions" for s in runs)
        + " |",
        "| --- | --- |" + " --- |" * len(runs),
    ]
    for key_, label, bar, higher in BARS:
        cells = []
        for s in runs:
            value = s["ratios"].get(key_)  # results from before a bar existed have none
            verdict = _verdict(value, bar, higher)
            if key_ == "real_vs_ceiling_throughput":
                verdict += f"; medians {_n(s['ratios']['real_vs_ceiling_throughput_median'])}"
            cells.append(f"{_n(value)} ({verdict})")
        target = f"≥ {bar:g}" if higher else f"≤ {bar:g}"
        out.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    out.append(
        "| rollback job time / one hand-written DELETE | – | "
        + " | ".join(_rollback_cell(s) for s in runs)
        + " |"
    )
    out.append(
        "| seconds: ceiling / real run / dry run | – | "
        + " | ".join(
            f"{_n((s['ceiling'] or {}).get('seconds'), 1)} / {_n(s['real']['seconds'], 1)} / "
            f"{_n(s['dry']['seconds'], 1)}"
            for s in runs
        )
        + " |"
    )
    out.append("")
    for g in growth(results, mix, server_):
        out += _growth_lines_md(g)
    return out


def _rollback_cell(s: dict) -> str:
    undo = s.get("rollback")
    if not undo:
        return "–"
    parts = "+".join(f"{n:,}" for n in undo["partitions_deleted"])
    return (
        f"{_n(s['ratios']['rollback_vs_delete_time'])} ({_n(undo['seconds'], 1)} s vs "
        f"{_n(undo['delete_seconds'], 1)} s; partitions deleted {parts})"
    )


def _growth_lines_md(g: dict) -> list[str]:
    small, large = _size(g["from"]), _size(g["to"])
    return [
        f"From {small} to {large} sessions: items grew {g['data_ratio']:.2f}×; real run time "
        f"**{g['real_time_ratio']:.2f}×** (bar ≤ {g['bar']:g}: "
        f"{_verdict(g['real_time_ratio'], g['bar'], False)}), dry run time "
        f"{g['dry_time_ratio']:.2f}×, the ceiling's time {_n(g['ceiling_time_ratio'])}×, the "
        f"real run's PostgreSQL CPU {g['cpu_ratio']:.2f}× (the ceiling's "
        f"{_n(g.get('ceiling_cpu_ratio'))}×); the server's peak RSS at {large} is "
        f"**{g['rss_ratio']:.2f}×** its {_size(g['rss_from'])} value (bar ≤ {RSS_BAR}: "
        f"{_verdict(g['rss_ratio'], RSS_BAR, False)})." + _misses_sentence(g["misses"]),
        "",
    ]


def _misses_sentence(misses: dict[int, float]) -> str:
    if len(misses) < 2:
        return ""
    return (
        " Blocks the real run read from outside shared_buffers, per goal created: "
        + ", ".join(f"{per_goal:.2f} at {_size(n)}" for n, per_goal in misses.items())
        + "."
    )


def _heading(s: dict) -> list[str]:
    data, machine = s["data"], s["machine"]
    return [
        f"## {data['mix']} mix, {data['sessions']:,} sessions"
        + (f", {server(s)}" if server(s) else ""),
        "",
        f"{s['date']}, commit {machine.get('commit', 'unknown')}; fsync {data['fsync']}, "
        f"synchronous_commit {data['synchronous_commit']}; {machine['cores']} cores, "
        f"{machine['memory_gb']} GB, PostgreSQL {data['server_version']}, Python "
        f"{machine['python']}; load average {machine['load_before']} before, "
        f"{machine['load_after']} after; the whole bench took {s['bench_seconds'] / 60:.1f} min. "
        f"Data: {data['candidate_sessions']:,} candidate sessions, {data['items']:,} action "
        f"items, {data['existing_goals']:,} existing goals, {data['database_mb']:,} MB. Seed "
        f"{s['seed']}; best of {s['repeats']}.",
        "",
    ]


def _engine_only_section(s: dict) -> list[str]:
    """A size measured without the ceiling (BENCH_CEILING=0): the engine's runs alone."""
    real, dry, items = s["real"], s["dry"], s["data"]["items"]
    out = _heading(s) + [
        "| measurement | seconds | items / s | goals created | CPU s: PostgreSQL + service "
        "| poll p50 / p99 / max ms | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, run in (("engine real run", real), ("engine dry run", dry)):
        out.append(
            f"| {label} (batch_size={run['batch_size']:,}) | {_n(run['seconds'])} | "
            f"{_n(items / run['seconds'], 0)} | {run['stats']['goals_created']:,} | "
            f"{_n(run['profile']['backend_cpu_seconds'])} + {_n(run['service_cpu_seconds'])} | "
            f"{_n(run['poll_p50_ms'], 1)} / {_n(run['poll_p99_ms'], 1)} / "
            f"{_n(run['poll_max_ms'], 1)} | {_n(run['rss_peak_mb'], 1)} |"
        )
    return out + [
        "",
        f"Row sets: {s['checks']['row_sets']}",
        "",
        *_where_the_time_goes(s),
        *_clinicians_section(s),
    ]


def _clinicians_section(s: dict) -> list[str]:
    work = s.get("clinicians")
    if not work:
        return []
    rows = [("no migration", work["idle"])]
    labels = (
        ("fixed", "fixed batches, not yielding to them"),
        ("adaptive", "adaptive, sharing (the defaults)"),
    )
    rows += [(f"during a real run, {label}", work[mode]) for mode, label in labels if mode in work]
    window = work.get("window_seconds")
    out = [
        "",
        f"### What clinicians feel ({work['clients']} clients: read goals, read sessions, add a "
        "goal, change a status)",
        "",
        "| while | requests | p50 ms | p99 ms | seconds measured | sessions migrated meanwhile "
        "| run seconds | job poll p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, latency in rows:
        migrated = latency.get("sessions_in_window")
        out.append(
            f"| {label} | {latency['requests']:,} | {_n(latency['p50_ms'], 1)} | "
            f"{_n(latency['p99_ms'], 1)} | {_n(latency.get('window_seconds'), 1)} | "
            f"{'–' if migrated is None else f'{migrated:,}'} | "
            f"{_n(latency.get('run_seconds'))} | {_n(latency.get('poll_p99_ms'), 1)} |"
        )
    out.append("")
    ratios = [f"fixed batches **{_n(work['p99_fixed_vs_idle'])}**"]
    if "p99_adaptive_vs_idle" in work:
        ratios.append(f"adaptive **{_n(work['p99_adaptive_vs_idle'])}** (target: at most 2)")
    out.append("p99 during a run / p99 with no migration: " + ", ".join(ratios) + ".")
    if window:
        out += [
            "",
            f"The clinicians stay for the run or {window} s, whichever ends first; a run that "
            "shares the database goes on at full speed once they leave.",
        ]
    return [*out, ""]


def _size_section(s: dict) -> list[str]:
    if not s["ceiling"]:
        return _engine_only_section(s)
    data, machine, ratios = s["data"], s["machine"], s["ratios"]
    real, dry, ceiling, floor = s["real"], s["dry"], s["ceiling"], s["floor"]
    items = data["items"]
    out = [
        *_heading(s),
        "| measurement | seconds | items / s | goals created | vs ceiling (throughput) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| SQL ceiling: one INSERT … SELECT | {_n(ceiling['seconds'])} | "
        f"{_n(items / ceiling['seconds'], 0)} | {ceiling['goals_created']:,} | 1.00 |",
        *_floor_row(floor, ceiling, items),
        _job_row("engine real run (adaptive)", real, items, ceiling),
        _job_row("engine dry run (adaptive)", dry, items, ceiling),
        "",
        f"Ratios: real/ceiling throughput **{_n(ratios['real_vs_ceiling_throughput'])}** "
        f"(medians: {_n(ratios['real_vs_ceiling_throughput_median'])}), "
        f"real/floor throughput **{_n(ratios['real_vs_floor_throughput'], 1)}**, "
        f"dry/ceiling time **{_n(ratios['dry_vs_ceiling_time'])}**, dry/real time "
        f"**{_n(ratios['dry_vs_real_time'])}**. Seconds of every repeat, in run order, with "
        "the cores other processes kept busy meanwhile: ceiling "
        f"{_with_load(ceiling['runs'], ceiling['background_cores'])}; real "
        f"{_with_load(s['real_runs'], s['real_background_cores'])}; dry "
        f"{_list(s['dry_runs'])}" + (f"; floor {_list(floor['runs'])}." if floor else "."),
        "",
        f"Row sets: {s['checks']['row_sets']}",
        "",
        *_where_the_time_goes(s),
        *_clinicians_section(s),
        *_rollback_section(s),
        "### Batch-size sweep (real runs)",
        "",
        "| batch size | seconds | items / s | vs ceiling | CPU s: PostgreSQL + service "
        "| poll p50 / p99 ms | peak RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in s["sweep"]:
        out.append(
            f"| {run['batch_size']:,} | {_n(run['seconds'])} | {_n(items / run['seconds'], 0)} | "
            f"{_n(ceiling['seconds'] / run['seconds'])} | "
            f"{_n(run['profile']['backend_cpu_seconds'])} + {_n(run['service_cpu_seconds'])} | "
            f"{_n(run['poll_p50_ms'], 1)} / {_n(run['poll_p99_ms'], 1)} | "
            f"{_n(run['rss_peak_mb'], 1)} |"
        )
    fastest = min(s["sweep"], key=lambda r: r["seconds"])
    cheapest = min(s["sweep"], key=_cpu)
    out += [
        "",
        f"Fastest: batch_size={fastest['batch_size']:,}; least CPU: "
        f"batch_size={cheapest['batch_size']:,}; the API's default is "
        f"{s['default_batch_size']:,}. Sizes other than the default ran once, so their times "
        "carry the machine's noise; their CPU seconds do not.",
        "",
        "### Polls and memory",
        "",
        f"Real run: {real['polls']} polls while running, p50 {_n(real['poll_p50_ms'], 1)} ms, "
        f"p99 {_n(real['poll_p99_ms'], 1)} ms, max {_n(real['poll_max_ms'], 1)} ms. Dry run: "
        f"{dry['polls']} polls, p50 {_n(dry['poll_p50_ms'], 1)} ms, p99 "
        f"{_n(dry['poll_p99_ms'], 1)} ms."
        + (
            f" The bar's p99 is over every poll of the mix's real and dry runs: "
            f"{ratios['polls']} polls, {_n(ratios['poll_p99_ms'], 1)} ms."
            if "polls" in ratios
            else ""
        )
        + f" Server peak RSS (VmHWM): real {_n(real['rss_peak_mb'], 1)} MB, dry "
        f"{_n(dry['rss_peak_mb'], 1)} MB.",
        "",
        "### CPU",
        "",
        "CPU seconds from /proc, which the machine's other load does not inflate (the "
        "engine's include its polls' queries).",
        "",
        "| run | CPU s: PostgreSQL backends | CPU s: service process | items per PostgreSQL "
        "CPU second | shared_buffers hits | misses (blocks read) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| ceiling | {_n(ceiling['cpu_seconds'])} | – | "
        f"{_n(items / ceiling['cpu_seconds'], 0)} | {_io(ceiling)} |",
        _cpu_row("engine real run", real, items),
        _cpu_row("engine dry run", dry, items),
        "",
        f"shared_buffers is {data.get('shared_buffers', '?')}, max_wal_size "
        f"{data.get('max_wal_size', '1GB')} and work_mem {data.get('work_mem', '?')} "
        + (f"({server(s)}, the rest stock)" if server(s) else "(the embedded server's defaults)")
        + "; hits and misses count "
        "blocks of therapy_sessions, treatment_goals, users and their indexes.",
        "",
        f"The engine's real run spends **{_n(ratios['real_vs_ceiling_database_cpu'])}×** the "
        f"ceiling's PostgreSQL CPU; on {machine['partitions']} partitions it can only beat the "
        f"ceiling's time when that is below {machine['partitions']}.",
        "",
        "### Where the engine's connections spend the real run",
        "",
        "Sampled from `pg_stat_activity` every "
        f"{real['profile']['interval_ms']} ms ({real['profile']['samples']:,} samples): the "
        "average number of the service's backends in each state. The job categories together "
        'are how many of the two cores the engine keeps busy; "client, in transaction" is '
        "time the database waits on the service between statements.",
        "",
        "| what | real run: backends | dry run: backends |",
        "| --- | ---: | ---: |",
    ]
    real_avg, dry_avg = real["profile"]["avg_backends"], dry["profile"]["avg_backends"]
    names = list(real_avg) + [n for n in dry_avg if n not in real_avg]
    small = [n for n in names if max(real_avg.get(n, 0), dry_avg.get(n, 0)) < 0.01]
    for name in names:
        if name not in small:
            out.append(f"| {name} | {_n(real_avg.get(name), 3)} | {_n(dry_avg.get(name), 3)} |")
    if small:
        out.append(
            f"| everything else ({len(small)} kinds, each under 0.01) | "
            f"{_n(sum(real_avg.get(n, 0) for n in small), 3)} | "
            f"{_n(sum(dry_avg.get(n, 0) for n in small), 3)} |"
        )
    waits = real["profile"]["waits"]
    if waits:
        out += ["", "Waits seen (real run, backends): " + _list_waits(waits) + "."]
    if s["explain"]:
        out += ["", "### EXPLAIN (ANALYZE, BUFFERS)", ""]
        out += _explain(s)
    out.append("")
    return out


def _where_the_time_goes(s: dict) -> list[str]:
    """A few sentences from the measurements: what each run spends its time on."""
    real, dry, ceiling = s["real"], s["dry"], s["ceiling"]
    plans = {p["label"].split(";")[0]: p for p in s["explain"]}
    whole = plans.get("ceiling (whole migration)")
    batch = plans.get("engine batch (real, as the service runs it")
    out = ["### Where the time goes", ""]
    if whole:
        fk = sum(t["ms"] for t in whole["triggers"])
        out.append(
            f"- **Ceiling** ({_n(ceiling['seconds'])} s on one core, {_n(ceiling['cpu_seconds'])} "
            f"CPU s): {_n(fk / whole['execution_ms'] * 100, 0)}% of its EXPLAINed execution is "
            "the foreign-key checks PostgreSQL runs for every inserted goal; the rest is reading "
            "and unnesting the JSON, sorting for the first occurrences, and inserting with the "
            "table's indexes."
        )
    if batch:
        fk = sum(t["ms"] for t in batch["triggers"])
        ours = sum(t["ms"] for t in batch["triggers"] if "source_job_id" in t["name"])
        out.append(
            f"- **Real run** ({_n(real['seconds'])} s; {_n(real['profile']['backend_cpu_seconds'])}"
            f" CPU s in PostgreSQL, {_n(real['service_cpu_seconds'])} in the service): its two "
            f"connections average {_n(_busy(real, 'batch statement'))} backends in the batch "
            f"statement, {_n(_busy(real, 'commit'))} committing and "
            f"{_n(_client(real))} waiting on the service between statements. In the explained "
            f"batch, foreign-key checks are {_n(fk / batch['execution_ms'] * 100, 0)}% of the "
            "execution, the check of source_job_id alone "
            f"{_n(ours / batch['execution_ms'] * 100, 0)}%."
        )
    out += [
        f"- **Dry run** ({_n(dry['seconds'])} s; {_n(dry['profile']['backend_cpu_seconds'])} CPU s "
        f"in PostgreSQL, {_n(dry['service_cpu_seconds'])} in the service): "
        f"{_n(_busy(dry, 'batch statement'))} backends in the batch statement, "
        f"{_n(_client(dry))} waiting on the service; it reads and judges every item as the real "
        "run does, and inserts nothing into treatment_goals.",
        "",
    ]
    return out


def _busy(run: dict, state: str) -> float:
    return run["profile"]["avg_backends"].get(state, 0.0)


def _client(run: dict) -> float:
    return sum(v for k, v in run["profile"]["avg_backends"].items() if k.startswith("client"))


def _rollback_section(s: dict) -> list[str]:
    undo = s.get("rollback")
    if not undo:
        return []
    parts = ", ".join(f"{n:,}" for n in undo["partitions_deleted"])
    return [
        "### Rollback",
        "",
        f"The first real run undone from two identical copies: a rollback job through the API "
        f"took **{_n(undo['seconds'])} s** ({_n(undo['cpu_seconds'])} CPU s in PostgreSQL; its "
        f"partitions deleted {parts} goals), one hand-written `DELETE FROM treatment_goals "
        f"WHERE source_job_id = $1` took **{_n(undo['delete_seconds'])} s** "
        f"({_n(undo['delete_cpu_seconds'])} CPU s): {_n(s['ratios']['rollback_vs_delete_time'])}× "
        f"its time. Both removed all {undo['goals_deleted']:,} goals; the job also checks each "
        "goal is unchanged since the run, so a clinician's edits would be kept.",
        "",
    ]


def _floor_row(floor: dict | None, ceiling: dict, items: int) -> list[str]:
    if not floor:
        return []  # left out at this size (BENCH_EXTRAS=0)
    return [
        f"| naive floor: per session and item ({floor['sessions']:,} sessions, "
        f"{floor['items']:,} items) | {_n(floor['seconds'])} | "
        f"{_n(floor['items'] / floor['seconds'], 0)} | {floor['goals_created']:,} | "
        f"{_n(ceiling['seconds'] / items * floor['items'] / floor['seconds'], 3)} |"
    ]


def _job_row(label: str, run: dict, items: int, ceiling: dict) -> str:
    return (
        f"| {label} (batch_size={run['batch_size']:,}; wall {_n(run['wall_seconds'])} s) | "
        f"{_n(run['seconds'])} | {_n(items / run['seconds'], 0)} | "
        f"{run['stats']['goals_created']:,} | {_n(ceiling['seconds'] / run['seconds'])} |"
    )


def _cpu(run: dict) -> float:
    return run["profile"]["backend_cpu_seconds"] + run["service_cpu_seconds"]


def _cpu_row(label: str, run: dict, items: int) -> str:
    database = run["profile"]["backend_cpu_seconds"]
    return (
        f"| {label} | {_n(database)} | {_n(run['service_cpu_seconds'])} | "
        f"{_n(items / database, 0) if database else '–'} | {_io(run)} |"
    )


def _io(run: dict) -> str:
    if "buffers" not in run:
        return "– | –"
    return f"{buffers.hits(run['buffers']):,} | {buffers.misses(run['buffers']):,}"


def _with_load(values: list[float], loads: list[float]) -> str:
    return ", ".join(f"{_n(v)} ({_n(load, 1)})" for v, load in zip(values, loads, strict=True))


def _list(values: list[float]) -> str:
    return ", ".join(_n(v) for v in values)


def _list_waits(waits: dict) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in waits.items())


def _explain(s: dict) -> list[str]:
    out = [
        "| statement | sessions | planning ms | execution ms | of which triggers ms "
        "| triggers: ms (calls) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for plan in s["explain"]:
        triggers = "; ".join(
            f"{t['name']}: {t['ms']:,.1f} ({t['calls']:,})" for t in plan["triggers"]
        )
        total = sum(t["ms"] for t in plan["triggers"])
        sessions = f"{plan['sessions']:,}" if plan["sessions"] is not None else "all"
        out.append(
            f"| {plan['label']} | {sessions} | {_n(plan['planning_ms'])} | "
            f"{_n(plan['execution_ms'])} | {_n(total)} | {triggers or '–'} |"
        )
    batches = s.get("batches")
    if batches:
        out += [
            "",
            f"The real run committed {batches['with_goals']:,} batches that created goals (of "
            f"about {batches['estimated']:,}); at the explained batch's execution time, the "
            f"batch statements alone account for about {_n(batches['statement_seconds'])} "
            f"backend-seconds, {_n(batches['statement_share'] * 100, 0)}% of the run's "
            f"{_n(s['real']['seconds'])} s × 2 partitions.",
        ]
    for plan in s["explain"]:
        out += [
            "",
            f"<details><summary>{plan['label']}</summary>",
            "",
            "```",
            plan["text"],
            "```",
            "",
            "</details>",
        ]
    return out


def write(results: dict[str, dict]) -> Path:
    """Render every size's results into docs/BENCHMARKS.md."""
    PAGE.write_text(render(results))
    return PAGE
