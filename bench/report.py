#!/usr/bin/env python3
"""report.py -- the reporting half of bench/run: turns the run's results.tsv into the tables
(printed, and written to docs/benchmarks.md with the machine description and the targets) and
draws the chart with gnuplot. Standard library only.

Usage: bench/report.py --results FILE --doc FILE.md --chart FILE.png --duration S
                       --luasock BIN --python BIN [--load "1.0 0.5 0.2"] [--quick]
                       [--instructions FILE [--instr-runs N] [--only-instructions]]
With --only-instructions it reports only the instruction counts (bench/run --instructions) in
--doc, and draws no chart.
"""
import argparse
import datetime
import os
import re
import subprocess
import sys

SERVERS = {
    "ref": "C reference (libev)",
    "luasock": "luasock",
    "floor": "Lua floor (libev + coroutine)",
    "node": "Node.js net",
    "asyncio": "Python asyncio",
    "luv": "Lua 5.4 + luv",
    "nginx": "nginx stream + ssl",
}
# The chart compares luasock with its peers; the Lua floor (a measure, not a peer) stays out.
CHART_LEFT_OUT = ("floor",)
# Shorter names for the chart's legend, whose bars mix plain and TLS workloads.
CHART_SERVERS = {"ref": "C reference", "node": "Node.js", "nginx": "nginx (TLS only)"}
# The same servers on the TLS workloads (there is no luv peer; nginx runs only these).
TLS_SERVERS = {
    "ref": "C reference (libev + OpenSSL)",
    "luasock": "luasock",
    "node": "Node.js tls",
    "asyncio": "Python asyncio + ssl",
    "nginx": "nginx stream + ssl → C echo",
}
REF = "ref"
TLS_MODES = ("tls", "handshake", "resume", "tls_idle")
HANDSHAKE_MODES = ("handshake", "resume")
CERTS = {"ecdsa-p256": "ECDSA P-256", "rsa-2048": "RSA-2048"}

# Targets for luasock with one worker (issue 4); each is checked per workload it names.
THROUGHPUT_MIN = 0.95  # × the reference's msgs/s, every echo workload
USER_VS_LUV_MAX = 0.5  # × luv's user CPU per message, every echo workload
SYS_VS_REF_MAX = 1.05  # × the reference's system CPU per message, every echo workload
LINE_USER_MAX_US = 0.5  # user CPU µs per line, line protocol with 16-deep pipelining
IDLE_KIB_MAX = 1.5  # KiB of RSS per idle connection at 10 000 connections
# Issue 18 (performance round 2), for luasock with one worker.
ECHO64_INSTR_MAX = 2000  # user-space instructions per message, 64 B echo (valgrind)
LINE_INSTR_MAX = 1000  # ... per pipelined line: receive("*l") + send
LINE_THROUGHPUT_MIN = 0.6  # × the reference's lines/s, pipelined line workload
CHAT_THROUGHPUT_MIN = 0.7  # × the reference chat server's deliveries/s, 1,000 members
NOT_COUNTED = "n/a (not counted in this run)"
# Reload under load "costs no more than one p99 blip", read as: with reloads, no slice of the
# window has a p99 above RELOAD_SLICE_P99_MAX × the whole window's p99 without reloads, and the
# longest reload (the event loop serves nothing meanwhile) lasts at most that p99.
RELOAD_SLICE_P99_MAX = 2

# TLS targets for luasock with one worker (issue 14), each checked per TLS workload it names.
TLS_THROUGHPUT_MIN = 0.9  # × the reference's msgs/s (handshakes/s), every TLS workload
TLS_VS_NGINX_MIN = 1.0  # × nginx's msgs/s (handshakes/s), every TLS workload
HANDSHAKE_CPU_MAX = 1.1  # × the reference's server CPU per full or resumed handshake
TLS_CPU_VS_NODE_MAX = 0.8  # × Node.js's server CPU per message, TLS echo workloads
TLS_IDLE_VS_NGINX_MAX = 1.0  # × nginx's RSS per idle TLS connection

# A round is clean when other programs took at most this % of the server's core.
CLEAN_OTHERS_MAX = 5


class Row:
    """One server on one workload: the fields of the loadgen's result line, or a failure."""

    def __init__(self, fields):
        self.key, self.server, self.round, self.mode = fields[0], fields[1], fields[2], fields[3]
        self.conns, self.size, self.depth = int(fields[4]), int(fields[5]), int(fields[6])
        self.status = fields[7]
        self.values = {}
        for item in fields[8:]:
            name, _, value = item.partition("=")
            try:
                self.values[name] = float(value)
            except ValueError:
                self.values[name] = value  # cert=ecdsa-p256: recorded for failed rows too
        if "srv_rss_kib" in self.values:
            self.values["srv_rss_mib"] = self.values["srv_rss_kib"] / 1024
        if "srv_user_us_per_msg" in self.values:
            self.values["srv_cpu_us_per_msg"] = (self.values["srv_user_us_per_msg"]
                                                 + self.values["srv_sys_us_per_msg"])

    @property
    def ok(self):
        return self.status == "ok"

    def get(self, name):
        return self.values.get(name) if self.ok else None


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(Row(line.rstrip("\n").split("\t")))
    return rows


def others(row):
    """% of the server's core that other programs took during the row's window."""
    return row.get("srv_core_other_pct")


def best_rounds(rows):
    """Each server's best round on each workload, in the order the workloads and servers first
    ran: the clean round with the highest msgs/s, else the least disturbed one (for idle: the
    lowest RSS per connection); failed only if every round failed."""
    best = {}
    for row in rows:
        key = (row.key, row.server)
        old = best.get(key)
        if old is None or (row.ok and not old.ok) or (row.ok and old.ok and better(row, old)):
            best[key] = row
    return list(best.values())


def better(row, old):
    if row.mode in ("idle", "tls_idle"):
        return row.get("kib_per_conn") < old.get("kib_per_conn")
    clean, old_clean = others(row) <= CLEAN_OTHERS_MAX, others(old) <= CLEAN_OTHERS_MAX
    if clean != old_clean:
        return clean
    if clean:
        return row.get("msgs_per_s") > old.get("msgs_per_s")
    return others(row) < others(old)


def size_label(n):
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def server_label(row):
    return (TLS_SERVERS if row.mode in TLS_MODES else SERVERS)[row.server]


def workload_label(row):
    cert = CERTS.get(row.values.get("cert"), "")
    if row.mode == "idle":
        return f"idle, {row.conns:,} conns"
    if row.mode == "tls_idle":
        return f"idle TLS, {row.conns:,} conns"
    if row.mode == "tls":
        return f"TLS echo, {row.conns:,} conns × {size_label(row.size)}"
    if row.mode == "handshake":
        return f"full handshakes, {cert}, {row.conns:,} at a time"
    if row.mode == "resume":
        return f"resumed handshakes, {cert}, {row.conns:,} at a time"
    if row.mode == "chat":
        senders = int(row.values.get("senders", 0))
        text = f"chat, {row.conns:,} members, {senders} senders × {size_label(row.size)} lines"
        return text + (f", {row.depth} in flight each" if row.depth > 1 else "")
    if row.mode in ("watch", "reload"):
        touches = int(row.values.get("touches", 0))
        return (f"echo, {row.conns:,} conns × {size_label(row.size)}, --watch, "
                + (f"{touches} touches" if touches else "no reload"))
    text = f"{row.mode}, {row.conns:,} conns × {size_label(row.size)}"
    if row.mode == "line":
        text += " lines"
    if row.depth > 1:
        text += f", {row.depth} in flight"
    return text


def workloads(rows):
    """Workload keys in run order, each with its rows by server."""
    order, by_key = [], {}
    for row in rows:
        if row.key not in by_key:
            order.append(row.key)
            by_key[row.key] = {}
        by_key[row.key][row.server] = row
    return [(key, by_key[key]) for key in order]


def fmt(value, digits):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def with_ratio(value, ref, digits, is_ref):
    text = fmt(value, digits)
    if value is None or is_ref or not ref:
        return text
    return f"{text} ({value / ref:.2f}×)"


NOT_MEASURED = "Not measured in this run."


def table(header, rows):
    """A markdown table whose columns line up when printed (none for no rows: a run of some of
    the workloads, `bench/run --workloads`)."""
    if not rows:
        return NOT_MEASURED
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


THROUGHPUT_COLUMNS = [  # (title, field, digits)
    ("msgs/s", "msgs_per_s", 0),
    ("p50 µs", "p50_us", 1),
    ("p99 µs", "p99_us", 1),
    ("user CPU µs/msg", "srv_user_us_per_msg", 2),
    ("user instr/msg", "instr_per_msg", 0),  # from the instruction counts; see add_instructions
    ("sys CPU µs/msg", "srv_sys_us_per_msg", 2),
    ("RSS MiB", "srv_rss_mib", 1),
]
# The same for chat, where a message is one line delivered to one member.
CHAT_COLUMNS = [
    ("delivered/s", "msgs_per_s", 0),
    ("p50 µs", "p50_us", 1),
    ("p99 µs", "p99_us", 1),
    ("user CPU µs/delivery", "srv_user_us_per_msg", 2),
    ("sys CPU µs/delivery", "srv_sys_us_per_msg", 2),
    ("RSS MiB", "srv_rss_mib", 1),
]


# TLS echo and handshakes: a message is one round trip (with -N one connection and handshake);
# CPU is the server's user + system time, and the load generator's own.
TLS_COLUMNS = [
    ("msgs/s (handshakes/s)", "msgs_per_s", 0),
    ("p50 µs", "p50_us", 1),
    ("p99 µs", "p99_us", 1),
    ("server CPU µs/msg", "srv_cpu_us_per_msg", 1),
    ("user / sys µs/msg", None, 1),
    ("loadgen CPU µs/msg", "loadgen_cpu_us_per_msg", 1),
    ("RSS MiB", "srv_rss_mib", 1),
]


def throughput_table(rows, modes, columns):
    """The workloads of the given modes, a line per server, with ratios to the reference."""
    header = (["workload", "server"] + [t for t, _, _ in columns]
              + ["core busy % srv / loadgen", "others % srv core"])
    out = []
    for key, by_server in workloads(rows):
        first = next(iter(by_server.values()))
        if first.mode not in modes:
            continue
        ref = by_server.get(REF)
        for server, row in by_server.items():
            cells = [workload_label(row) if row is first else "", server_label(row)]
            if not row.ok:
                out.append(cells + [f"FAILED: {row.status[len('failed: '):]}"] +
                           [""] * (len(columns) + 1))
                continue
            for _, field, digits in columns:
                if field is None:  # user / sys
                    cells.append(f"{row.get('srv_user_us_per_msg'):.{digits}f} / "
                                 f"{row.get('srv_sys_us_per_msg'):.{digits}f}")
                    continue
                cells.append(with_ratio(row.get(field), ref.get(field) if ref else None, digits,
                                        server == REF))
            cells.append(f"{row.get('srv_core_pct'):.0f} / {row.get('loadgen_core_pct'):.0f}")
            cells.append(others_cell(row))
            out.append(cells)
    return table(header, out)


def others_cell(row):
    mark = "" if others(row) <= CLEAN_OTHERS_MAX else " (disturbed)"
    return f"{max(others(row), 0):.0f}{mark}"


# Instruction counts whose runs differ by more than this fraction of the fewest, and by more than
# INSTR_SPREAD_MIN instructions per message, are marked.
INSTR_SPREAD_MAX = 0.02
INSTR_SPREAD_MIN = 10
# Servers whose instructions bench/run counts (Node.js is not counted; see INSTR_TEXT).
INSTR_SERVERS = ("ref", "luasock", "floor", "luv", "asyncio")


def instruction_counts(instr_rows):
    """Per instruction workload in run order: by server, the runs' rows (failed ones too)."""
    order, by_key = [], {}
    for row in instr_rows:
        if row.key not in by_key:
            order.append(row.key)
            by_key[row.key] = {}
        by_key[row.key].setdefault(row.server, []).append(row)
    return [(key, by_key[key]) for key in order]


def instr_best(runs):
    """The fewest instructions per message of the runs: other programs on the load generator's
    core only add to a count (the server then finds fewer messages per loop iteration)."""
    values = [r.get("instr_per_msg") for r in runs if r.ok]
    return min(values) if values else None


def add_instructions(rows, instr_rows):
    """Puts each server's instructions per message (the fewest of the runs) into its row of the
    same workload (key), for the "user instr/msg" column of the results table. Returns them by
    (key, server), rows or not (the Lua floor has no throughput rows)."""
    best = {(key, server): instr_best(runs)
           for key, by_server in instruction_counts(instr_rows)
           for server, runs in by_server.items()}
    for row in rows:
        count = best.get((row.key, row.server))
        if row.ok and count is not None:
            row.values["instr_per_msg"] = count
    return best


def instructions_table(instr_rows):
    """Instructions per message: the fewest of the runs, each run, and luasock's ratio."""
    header = ["workload", "server", "messages", "instructions/msg (fewest)", "runs",
              "luasock ÷ server"]
    out = []
    for key, by_server in instruction_counts(instr_rows):
        luasock = instr_best(by_server.get("luasock", []))
        first = True
        for server, runs in by_server.items():
            row = runs[0]
            cells = [workload_label(row) if first else "", server_label(row)]
            first = False
            best = instr_best(runs)
            msgs = next((r.get("msgs") for r in runs if r.ok), None)
            each = ", ".join(fmt(r.get("instr_per_msg"), 0) if r.ok
                             else f"FAILED: {r.status[len('failed: '):]}" for r in runs)
            values = [r.get("instr_per_msg") for r in runs if r.ok]
            spread = max(values) - min(values) if values else 0
            if spread > INSTR_SPREAD_MAX * best and spread > INSTR_SPREAD_MIN:
                each += f" (differ by {spread / best * 100:.1f} %)"
            ratio = "–"
            if server != "luasock" and best and luasock is not None:
                ratio = f"{luasock / best:.2f}×"
            out.append(cells + [fmt(msgs, 0), fmt(best, 0), each, ratio])
    return table(header, out)


def reload_table(rows):
    """luasock --watch under the echo load, without and with reloads."""
    header = ["workload", "msgs/s", "p99 µs", "max µs (at s)", "slice p99 median µs",
              "slice p99 worst µs (at s)", "reloads (log)", "reload ms median / max",
              "others % srv core"]
    out = []
    for key, by_server in workloads(rows):
        row = by_server.get("luasock")
        if row is None or row.mode not in ("watch", "reload"):
            continue
        if not row.ok:
            out.append([workload_label(row), f"FAILED: {row.status[len('failed: '):]}"]
                       + [""] * (len(header) - 2))
            continue
        reloads = f"{row.get('reloads'):.0f}"
        if row.get("touches"):
            reloads += f" of {row.get('touches'):.0f} touches"
        times = "–"
        if row.get("reloads"):
            times = f"{row.get('reload_ms_median'):.1f} / {row.get('reload_ms_max'):.1f}"
        out.append([workload_label(row), fmt(row.get("msgs_per_s"), 0), fmt(row.get("p99_us"), 1),
                    f"{row.get('max_us'):.1f} ({row.get('max_at_s'):.1f})",
                    fmt(row.get("slice_p99_median_us"), 1),
                    f"{row.get('slice_p99_worst_us'):.1f} ({row.get('slice_p99_worst_at_s'):.1f})",
                    reloads, times, others_cell(row)])
    return table(header, out)


def idle_table(rows, mode):
    header = ["workload", "server", "RSS at start MiB", "RSS holding MiB", "KiB per conn"]
    out = []
    for key, by_server in workloads(rows):
        first = next(iter(by_server.values()))
        if first.mode != mode:
            continue
        ref = by_server.get(REF)
        for server, row in by_server.items():
            cells = [workload_label(row) if row is first else "", server_label(row)]
            if not row.ok:
                out.append(cells + [f"FAILED: {row.status[len('failed: '):]}", "", ""])
                continue
            cells += [fmt(row.get("srv_rss_start_kib") / 1024, 1),
                      fmt(row.get("srv_rss_kib") / 1024, 1),
                      with_ratio(row.get("kib_per_conn"), ref.get("kib_per_conn") if ref else None,
                                 2, server == REF)]
            out.append(cells)
    return table(header, out)


# Within this fraction of its bound a verdict is "close": on this machine, run-to-run noise can
# turn it either way.
CLOSE = 0.10


def verdict(value, bound, at_most, strict=False, missing="n/a (failed)"):
    if value is None:
        return missing
    if strict:
        good = value < bound if at_most else value > bound
    else:
        good = value <= bound if at_most else value >= bound
    close = " (close)" if abs(value / bound - 1) < CLOSE else ""
    return ("met" if good else "**not met**") + close


def floor_cells(floor, bound, digits, unit=""):
    """The Lua floor's figure for a target's value cell, and for its verdict whether the bound is
    below it (then no server can meet it running the same handler on the same Lua)."""
    if floor is None:
        return "", ""
    return (f" (Lua floor {fmt(floor, digits)}{unit})",
            "; the Lua floor alone is above it" if floor > bound else "")


def targets_table(rows, quick, instr_counts):
    out = []
    still = next((r for r in rows if r.mode == "watch" and r.server == "luasock"), None)
    for key, by_server in workloads(rows):
        ls, ref, luv = by_server.get("luasock"), by_server.get(REF), by_server.get("luv")
        nginx, node = by_server.get("nginx"), by_server.get("node")
        first = next(iter(by_server.values()))
        if ls is None:
            continue
        label = workload_label(first)
        def ratio(field, other):
            if not (ls.ok and other is not None and other.ok and other.get(field)):
                return None
            return ls.get(field) / other.get(field)
        def instructions_row(unit, bound):
            v = ls.get("instr_per_msg")
            shown, above = floor_cells(instr_counts.get((key, "floor")), bound, 0)
            return ["", f"user instr/{unit} ≤ {bound:,}", fmt(v, 0) + shown,
                    verdict(v, bound, True, missing=NOT_COUNTED) + above]
        if first.mode == "echo":
            r = ratio("msgs_per_s", ref)
            out.append([label, f"throughput ≥ {THROUGHPUT_MIN} × reference", fmt(r, 2) + "×",
                        verdict(r, THROUGHPUT_MIN, False)])
            if key == "echo64":
                out.append(instructions_row("msg", ECHO64_INSTR_MAX))
            r = ratio("srv_user_us_per_msg", luv)
            out.append(["", f"user CPU/msg ≤ {USER_VS_LUV_MAX} × luv's", fmt(r, 2) + "×",
                        verdict(r, USER_VS_LUV_MAX, True)])
            r = ratio("srv_sys_us_per_msg", ref)
            out.append(["", f"sys CPU/msg ≤ {SYS_VS_REF_MAX} × reference's", fmt(r, 2) + "×",
                        verdict(r, SYS_VS_REF_MAX, True)])
        elif first.mode == "line":
            v = ls.get("srv_user_us_per_msg")
            out.append([label, f"user CPU/line ≤ {LINE_USER_MAX_US} µs", fmt(v, 2) + " µs",
                        verdict(v, LINE_USER_MAX_US, True)])
            out.append(instructions_row("line", LINE_INSTR_MAX))
            r = ratio("msgs_per_s", ref)
            out.append(["", f"lines/s ≥ {LINE_THROUGHPUT_MIN} × reference", fmt(r, 2) + "×",
                        verdict(r, LINE_THROUGHPUT_MIN, False)])
        elif first.mode == "chat":
            r = ratio("msgs_per_s", ref)
            out.append([label, f"deliveries/s ≥ {CHAT_THROUGHPUT_MIN} × reference",
                        fmt(r, 2) + "×", verdict(r, CHAT_THROUGHPUT_MIN, False)])
        elif first.mode == "idle":
            v = ls.get("kib_per_conn")
            note = " (quick run: not at 10,000)" if quick or ls.conns < 10000 else ""
            floor = by_server.get("floor")
            shown, above = floor_cells(floor.get("kib_per_conn") if floor else None,
                                       IDLE_KIB_MAX, 2, " KiB")
            out.append([label, f"RSS ≤ {IDLE_KIB_MAX} KiB per idle conn{note}",
                        fmt(v, 2) + " KiB" + shown, verdict(v, IDLE_KIB_MAX, True) + above])
            r = ratio("kib_per_conn", by_server.get("asyncio"))
            out.append(["", "RSS per idle conn < asyncio's", fmt(r, 2) + "×",
                        verdict(r, 1, True, strict=True)])
        elif first.mode in ("tls",) + HANDSHAKE_MODES:
            what = "handshakes/s" if first.mode in HANDSHAKE_MODES else "throughput"
            r = ratio("msgs_per_s", ref)
            out.append([label, f"{what} ≥ {TLS_THROUGHPUT_MIN} × reference", fmt(r, 2) + "×",
                        verdict(r, TLS_THROUGHPUT_MIN, False)])
            r = ratio("msgs_per_s", nginx)
            out.append(["", f"{what} ≥ nginx's", fmt(r, 2) + "×",
                        verdict(r, TLS_VS_NGINX_MIN, False)])
            if first.mode in HANDSHAKE_MODES:
                kind = "full" if first.mode == "handshake" else "resumed"
                r = ratio("srv_cpu_us_per_msg", ref)
                out.append(["", f"server CPU per {kind} handshake ≤ {HANDSHAKE_CPU_MAX} × "
                            "reference's", fmt(r, 2) + "×", verdict(r, HANDSHAKE_CPU_MAX, True)])
            else:
                r = ratio("srv_cpu_us_per_msg", node)
                out.append(["", f"server CPU/msg ≤ {TLS_CPU_VS_NODE_MAX} × Node.js's",
                            fmt(r, 2) + "×", verdict(r, TLS_CPU_VS_NODE_MAX, True)])
        elif first.mode == "tls_idle":
            r = ratio("kib_per_conn", nginx)
            note = " (quick run: not at 5,000)" if quick or ls.conns < 5000 else ""
            out.append([label, f"RSS per idle TLS conn ≤ nginx's{note}",
                        f"{fmt(ls.get('kib_per_conn'), 2)} KiB = {fmt(r, 2)}×",
                        verdict(r, TLS_IDLE_VS_NGINX_MAX, True)])
        elif first.mode == "reload":
            normal = still.get("p99_us") if still is not None else None
            worst, longest = ls.get("slice_p99_worst_us"), ls.get("reload_ms_max")
            r = worst / normal if worst is not None and normal else None
            out.append([label, f"worst {fmt(ls.get('slice_ms'), 0)} ms slice's p99 ≤ "
                        f"{RELOAD_SLICE_P99_MAX} × p99 without reloads", fmt(r, 2) + "×",
                        verdict(r, RELOAD_SLICE_P99_MAX, True)])
            r = longest * 1000 / normal if longest is not None and normal else None
            out.append(["", "longest reload ≤ p99 without reloads",
                        f"{fmt(longest, 1)} ms = {fmt(r, 2)}×", verdict(r, 1, True)])
    return table(["workload", "target (luasock, 1 worker)", "luasock", "status"], out)


def command_output(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def cpu_model():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def luasock_revision(binary):
    """The commit of the work tree the luasock binary was built in (LUASOCK_BIN may name
    another work tree's build)."""
    top = command_output(["git", "-C", os.path.dirname(os.path.abspath(binary)), "rev-parse",
                          "--show-toplevel"])
    if top == "unknown" or not os.path.isdir(top):
        top = "."
    commit = command_output(["git", "-C", top, "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", top, "status", "--porcelain", "--", "src", "include",
                            "scripts", "CMakeLists.txt", "examples/echo.lua", "examples/chat.lua",
                            "bench/line.lua"])
    where = "" if os.path.realpath(top) == os.path.realpath(".") else f" ({top})"
    return commit + where + (" with uncommitted changes" if dirty not in ("", "unknown") else "")


def luasock_description(binary):
    return f"{command_output([binary, '--version'])}, commit {luasock_revision(binary)}"


def machine(args):
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    luv = command_output(["lua5.4", "-e", 'print(require("luv").version_string())'])
    return [
        ["cores (`nproc`)", command_output(["nproc"])],
        ["CPU", cpu_model()],
        ["memory", f"{mem_kib / 1048576:.0f} GiB"],
        ["kernel", command_output(["uname", "-sr"])],
        ["load average at start (1/5/15 min)", args.load or "unknown"],
        ["network", args.network],
        ["luasock", luasock_description(args.luasock)],
        ["C compiler (reference, loadgen)", command_output(["cc", "--version"])],
        ["Node.js", command_output(["node", "--version"])],
        ["Python", f"{command_output([args.python, '--version'])} ({args.python})"],
        ["Lua (luv peer)", " ".join(command_output(["lua5.4", "-v"]).split()[:2])
         + f", luv {luv} (Debian lua-luv)"],
        ["valgrind (instruction counts)", command_output(["valgrind", "--version"])],
        ["OpenSSL", command_output(["openssl", "version"])],
        ["nginx (TLS peer)", command_output(["nginx", "-v"]).replace("nginx version: ", "")
         + " (Debian nginx-light, libnginx-mod-stream)"],
    ]


def failures(rows, what="round"):
    return [f"- {server_label(r)} on {workload_label(r)}, {what} {r.round}: {r.status}"
            for r in rows if not r.ok]


GNUPLOT = """\
set terminal pngcairo size 1100,1200 font "sans,10"
set output '{png}'
set datafile separator "\\t"
set datafile missing "NaN"
set style fill solid 0.85 border -1
# Bar j (1 to {n}) of workload row r (0, 1, ...) sits at x = r + off(j).
width = 0.8 / {n}
off(j) = (j - 1 - ({n} - 1) / 2.0) * width
set boxwidth width absolute
set key above horizontal maxcols 5 autotitle columnhead
set grid ytics
set xtics nomirror scale 0
set offsets 0.5, 0.5, graph 0.08, 0
set multiplot layout 3,1
set title "{title}\\nserver user CPU per message (chat: per delivery; µs, log scale; lower is better)"
set xtics ({tics})
set logscale y
set yrange [0.01:*]
plot for [j=1:{n}] '{data}' using ($0 + off(j)):(column(j + 1)) with boxes lc j \\
         title columnhead(j + 1), \\
     for [j=1:{n}] '{data}' using ($0 + off(j)):(column(j + 1)):\\
         (sprintf("%.2f", column(j + 1))) with labels offset 0,0.6 font ",8" notitle
unset logscale y
set yrange [0:*]
set title "messages per second (chat: lines delivered; higher is better)"
plot for [j=1:{n}] '{data}' using ($0 + off(j)):(column(j + 1 + {n}) / 1000) with boxes lc j \\
         title columnhead(j + 1), \\
     for [j=1:{n}] '{data}' using ($0 + off(j)):(column(j + 1 + {n}) / 1000):\\
         (sprintf("%.0fk", column(j + 1 + {n}) / 1000)) with labels offset 0,0.6 font ",8" notitle
set title "RSS growth per idle connection (KiB; lower is better)"
set xtics ({idle_tics})
set offsets 1.5, 1.5, graph 0.08, 0
set bmargin 4
plot for [j=1:{n}] '{idle}' using ($0 + off(j)):(column(j + 1)) with boxes lc j \\
         title columnhead(j + 1), \\
     for [j=1:{n}] '{idle}' using ($0 + off(j)):(column(j + 1)):\\
         (sprintf("%.2f", column(j + 1))) with labels offset 0,0.6 font ",8" notitle
unset multiplot
"""


def chart_label(row):
    """A short workload name for the chart's x axis."""
    if row.mode == "idle":
        return f"idle\\n{row.conns:,} conns"
    if row.mode == "tls_idle":
        return f"idle TLS\\n{row.conns:,} conns"
    if row.mode == "tls":
        return f"TLS echo\\n{row.conns:,} × {size_label(row.size)}"
    if row.mode == "chat":
        return f"chat\\n{row.conns:,} members × {size_label(row.size)}"
    depth = f", {row.depth} in flight" if row.depth > 1 else ""
    return f"{row.mode}\\n{row.conns:,} × {size_label(row.size)}{depth}"


def chart(rows, png, work_dir, title):
    servers = [s for s in SERVERS
               if s not in CHART_LEFT_OUT and any(r.server == s for r in rows)]
    data, idle = os.path.join(work_dir, "chart.tsv"), os.path.join(work_dir, "chart-idle.tsv")
    def cell(row, field):
        value = row.get(field) if row else None
        return "NaN" if value is None else f"{value:.4f}"
    tics, idle_tics = [], []
    with open(data, "w", encoding="utf-8") as f, open(idle, "w", encoding="utf-8") as g:
        names = "\t".join(CHART_SERVERS.get(s, SERVERS[s]) for s in servers)
        f.write(f"workload\t{names}\t{names}\n")
        g.write(f"workload\t{names}\n")
        for key, by_server in workloads(rows):
            first = next(iter(by_server.values()))
            if first.mode in ("watch", "reload") + HANDSHAKE_MODES:
                continue
            if first.mode in ("idle", "tls_idle"):
                idle_tics.append(f'"{chart_label(first)}" {len(idle_tics)}')
                g.write(key + "".join("\t" + cell(by_server.get(s), "kib_per_conn")
                                      for s in servers) + "\n")
                continue
            tics.append(f'"{chart_label(first)}" {len(tics)}')
            f.write(key
                    + "".join("\t" + cell(by_server.get(s), "srv_user_us_per_msg") for s in servers)
                    + "".join("\t" + cell(by_server.get(s), "msgs_per_s") for s in servers) + "\n")
    if not tics or not idle_tics:  # `bench/run --workloads` without a panel's workloads
        print("bench: no chart: it needs a throughput and an idle workload")
        return
    script = GNUPLOT.format(png=png, data=data, idle=idle, n=len(servers), title=title,
                            tics=", ".join(tics), idle_tics=", ".join(idle_tics))
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


INTRO = """\
# Benchmarks

`bench/run` measures luasock against minimal C echo and chat servers and three other event-loop
servers, and over TLS against a C libev + OpenSSL echo server, Node.js, asyncio and nginx, all in
one run on one machine, over loopback; beside them, the Lua floor (luasock's handlers on a bare
libev + Lua server, see "The servers") shows what the handlers themselves cost. It installs missing Debian packages (`lua-luv`,
`gnuplot-nox`, `python3`, `valgrind`, `nginx-light`, `libnginx-mod-stream`), builds luasock
(`scripts/setup`) and its own C programs (into `build/bench/`), runs each server in turn on each
workload (and luasock alone on the reload workload), counts the instructions each server executes
per message under valgrind, and rewrites this page and its chart. `bench/run --quick` (1 s per
workload, one round, 10 connections, 200 idle ones, plain and TLS, 100 chat members, a tenth of
the messages counted and not asyncio's) only checks that the harness still works, for CI, and
writes to `build/bench/quick/` instead of here; `--workloads` runs some of the workloads (e.g.
`--workloads tls`) and writes to `build/bench/partial/`.
`bench/run --instructions` does the instruction counts alone, in about a minute, to compare
two builds of luasock (`LUASOCK_BIN=path` names the one to run); `bench/run --help` lists the
options.

This page is generated: its text lives in `bench/report.py`, so edit that, not this file.
{quick}Run of {date}: {duration} s per workload, {rounds} of each throughput workload in
alternating server order, measurements done in {elapsed}. Each row shows its server's best
round (see "How it is measured"); all figures of a row come from that one round, and the ratios
compare rows of this run.
"""

METHOD = """\
## How it is measured
- **Pinning.** Each server runs alone, pinned to core 1 (`taskset -c 1`); the load generator is
  pinned to core 0. A fresh server process is started for every workload and round.
- **Network.** Loopback in a private network namespace (`unshare -n`), so other loopback
  traffic on the machine does not mix in, with TCP congestion control `reno` (a namespace may
  only choose an allowed one). The machine's default, `bbr`, paces even loopback traffic: in
  trials here it cost the reference about a fifth of its pipelined msgs/s, with both cores
  waiting part of the time. The machine table above says what this run used.
- **Load generator** (`bench/loadgen.c`, single-threaded epoll): N connections, closed loop: each
  keeps P messages of S bytes in flight (P = 1: send, wait for all S bytes back, send the next),
  and checks every echoed byte against what it sent (message k of connection c is a slice of a
  pseudo-random pattern at an offset depending on c and k; a mismatch stops the run). Measuring
  starts only after every connection is established and has done one round trip. Latency is from
  a message's send to the arrival of its last byte, in a histogram with ~1.5 % buckets. After
  the window nothing new is sent, and what is in flight must still arrive: a lost message fails
  the run even when nothing was sent after it.
- **Chat load** (`loadgen -C SENDERS`): every connection joins the room and waits for its welcome
  line, which names it. When all have joined, each sender says one line and every other member
  must have it before the window opens: the join announcements all came before it, so the window
  holds chat lines only (an announcement in it, such as someone leaving, fails the run). Line k
  of sender s reads "s k " and pattern bytes; every member checks every line it gets: its
  sender's nick, that sender's line number (none lost, none out of order) and every byte.
- **CPU per message**: the server process's own utime and stime from `/proc/PID/stat` (all its
  threads), sampled by the load generator right at the start and end of the measured window (so
  connection setup is excluded), divided by the messages completed in the window. The kernel
  reports them in 10 ms ticks (a 5 s window at full load holds ~500) and splits the exact total
  into user and system time by sampling.
  On loopback the receiving side's TCP input runs as softirq inside the sender's system calls,
  so a server's system time includes delivering its echo to the client.
- **RSS**: `VmRSS` from `/proc/PID/status` at the end of the window. For the idle workload: before
  any connection, and again with all connections open after one round trip each;
  the difference divided by the number of connections is the RSS growth per connection (socket
  buffers live in the kernel and are not part of it).
- **Ratios** (`0.97×`) are to the C reference server in the same run.
- **core busy % srv / loadgen**: how busy each side's core was during the window (the window
  minus the core's idle time in `/proc/stat`).
  When the load generator's core is near 100 % it is the bottleneck (it makes as many system
  calls per message as the server: on two cores nothing faster is possible) and msgs/s compares
  the servers poorly; CPU per message still does.
- **others % srv core**: the part of the server core's time in the window that was not the
  server's (core busy time minus the server's utime + stime): other programs on the machine.
  The machine is a 2-core VM shared with other work (test suites, builds), which can take half
  a core for seconds. That is why each throughput workload runs in several rounds: a row shows
  the server's clean round (others ≤ {clean} %) with the highest msgs/s, or, if no round was
  clean, the least disturbed one, marked "(disturbed)". The same figure for the load
  generator's core is in the raw results, but it also counts the kernel's wake-up work whenever
  the load generator waits, so it is no measure of other programs. Interference from outside
  the VM is not visible at all. Raw rows of every round are in `build/bench/run/results.tsv`,
  each run's logs beside it.

## The servers
| server | file | byte echo | line echo |
|---|---|---|---|
| C reference | `bench/peers/ref_echo.c` | libev; one read into a shared 64 KiB buffer, written straight back; a write watcher handles partial writes | the same program: echoing a line-delimited byte stream byte for byte sends back the same bytes |
| luasock | `examples/echo.lua`, `bench/line.lua` | `receiveany(65536)` + `send` | one `receive("*l")` + one `send(line, "\\n")` per line |
| Node.js | `bench/peers/echo.js` | `net` server, `socket.write(chunk)` per `data` event | splits each chunk at `\\n`, one `socket.write` per line |
| Python asyncio | `bench/peers/echo_asyncio.py` | `asyncio.Protocol`, `transport.write(data)` | splits at `\\n`, one `transport.write` per line |
| Lua + luv | `bench/peers/echo_luv.lua` | `read_start` callback, `client:write(data)` | splits at `\\n`, one `client:write` per line |
| Lua floor | `bench/peers/lua_floor.c` running `examples/echo.lua` | libev; a coroutine per connection runs luasock's own handler; `receiveany` yields until readable, then reads into a shared buffer; `send` writes at once | the same with `bench/line.lua`: `receive("*l")` splits a buffer that exists only while it holds bytes |

Every server listens with backlog 511 and sets `TCP_NODELAY` on its connections (asyncio does
by default). The luv peer runs on `lua5.4`: Debian's `lua-luv` ships modules for Lua 5.1 to 5.4
(`dpkg -L lua-luv`), so it uses the same Lua as luasock. luasock runs with its single event loop
(one worker) and `--log-level warn`. Note that luasock queues output and sends everything written
in one loop iteration with one `send(2)`, while the peers' per-line writes each go to the socket
as they are made: that difference is part of what the line workload measures.

The Lua floor is not a peer but a measure: the least a server can do to run luasock's own
handlers, unchanged, on the same Lua 5.4 with the same allocator (`src/blocks.c`). Its methods
check nothing, keep no timeouts or limits, and write at once; it has no error messages, logs or
protection of the process from a handler. What luasock costs above it is what those features
cost, and a target below it cannot be met by any server running the same handler on this Lua.
It is counted for instructions per message and runs the idle workload; its throughput is not
measured (it sends at once, a system call per `send`, so its messages/s would say nothing about
a floor), and it is left out of the chart.

For the chat workload each peer is a minimal chat room with `examples/chat.lua`'s wire
behaviour as far as the workload uses it: a welcome line naming the new member (`* welcome to the
chat, guestN!`; chat.lua's goes on to list its commands), `* guestN joined` to everyone else, and
each non-empty line said to everyone else as `<guestN> line`. The peers have no commands and
announce no leaves; like luasock under chat.lua (its default `max_queue`) they drop a member with
more than 256 KiB unsent.

| server | file | how a line reaches the other members |
|---|---|---|
| C reference | `bench/peers/ref_chat.c` | libev; the line is appended to each member's output buffer, and an `ev_prepare` watcher sends each buffer with one `send(2)` before the loop waits |
| luasock | `examples/chat.lua`, unchanged | `conn:post(line)` per member: queued, and sent with one `send(2)` per connection per loop iteration; it also strips control characters and looks for commands |
| Node.js | `bench/peers/chat.js` | `socket.write(buffer)` per member |
| Python asyncio | `bench/peers/chat_asyncio.py` | `transport.write(data)` per member |
| Lua + luv | `bench/peers/chat_luv.lua` | `client:write(line)` per member |

The reference and luasock send the lines of several senders that arrive in one loop iteration to
a member together; the other peers' writes each go to the socket as they are made.
"""

INSTR_TEXT = """\
User-space instructions per message, counted by valgrind: a figure that hardly changes between
runs or with other work on the machine, unlike the CPU time per message (which the kernel samples
in 10 ms ticks), to compare builds of luasock. Each server runs under `valgrind --tool=cachegrind
--cache-sim=no`, pinned as in the throughput runs, once while the load generator (`loadgen -n`)
opens the connections of the workload, does one round trip on each, then completes a fixed
number of messages with the workload's number in flight, and closes them; and once more with no
messages after the round trip. Each run ends with SIGTERM once the server has seen every
connection close, and cachegrind writes the run's total as the server exits. The difference of
the two totals divided by the number of messages is what one message costs in the server's own
code, its libraries and its interpreter, without the kernel. Each count ran {runs}; the table
gives the fewest of the runs, and each run ("differ by" marks runs more than {spread} % apart).
Other programs on the load generator's core can only add to a count: the server then finds
fewer messages ready per loop iteration (with both cores kept busy, trials here counted 1 % more
for luasock's echo); on a quiet machine the fewest repeats within a few instructions.
The last column is luasock's figure over the server's: below 1, luasock executes fewer
instructions per message.

Under valgrind every server runs several times slower than natively and is always the
bottleneck, so each loop iteration finds many connections' messages ready and the cost of the
iteration itself is shared among them: the figures are for a busy server. (In trials here with
one connection, where every message is its own loop iteration, the 64 B echo cost luasock about
15 % more instructions and the reference 2.6 times as many.) Node.js is not counted: V8 compiles
JavaScript on background threads while it runs and recompiles hot code in stages, so its count
depends on the number of messages and on the threads' timing; in trials here its start-up alone
varied by 3 % between two runs, about 900 instructions per message at 20,000 messages. CPython
compiles nothing, and its counts were as repeatable as the others'.
"""

CHAT_TEXT = """\
Every member of `examples/chat.lua`'s room receives every line another member says. The members
join one after another, then a few of them, the senders, each keep one line in flight: a sender
says its next line when the last other member has received the previous one. A message is one
line delivered to one member (each line makes members − 1 of them): delivered/s, the latency
(from the line's send to its arrival at that member) and the CPU figures are per delivery. The
joins, each announced to every member already in, are outside the window. Ratios are to the C
reference chat server (`bench/peers/ref_chat.c`); "How it is measured" says more.
"""

RELOAD_TEXT = """\
The issue asks that reloading the script under load (`luasock serve --watch`) cost "no more than
one p99 blip". luasock serves a copy of `examples/echo.lua` with `--watch` under the {load}
echo load, once untouched (the baseline) and once while the load generator touches the script
{touches} times, evenly spread over the window (each touch reloads it, after `--watch`'s 0.1 s of
quiet). The window is cut into {slice} ms slices with their own latency histograms. The targets
read the issue as two checks: no slice's p99 with reloads exceeds {max} × the baseline's p99 (a
reload shows as a blip at most, not as a slower stretch), and the longest reload, during which
the event loop serves nothing, lasts at most the baseline's p99 (the messages in flight then are
delayed by no more than one p99). The first alone would miss a short stall: with {conns}
connections at most {conns} messages wait through it, under 1 % of a slice's; the maximum latency
shows it too. Reload times are the server log's `reloaded ... in N ms` lines (these two runs log
at level info).
"""


def reload_text(rows):
    touched = next((r for r in rows if r.mode == "reload"), None)
    if touched is None:
        return ""
    return RELOAD_TEXT.format(load=f"{touched.conns} × {size_label(touched.size)}",
                              conns=touched.conns, max=RELOAD_SLICE_P99_MAX,
                              touches=fmt(touched.get("touches"), 0) if touched.ok else "several",
                              slice=fmt(touched.get("slice_ms"), 0) if touched.ok else "short")


RESUME_MIN_PCT = 90  # bench/run's resume_min_pct

TLS_TEXT = """\
TLS 1.3 on the same loopback (OpenSSL's defaults: TLS_AES_256_GCM_SHA384, X25519). The load
generator is the same program with `-t`: one thread, non-blocking OpenSSL on its epoll loop, SNI
`localhost`, the certificate not verified. The certificates are made for the run: ECDSA P-256
(`scripts/devcert`) and a self-signed RSA-2048 one (`openssl req`).
- **TLS echo**: the echo workloads over TLS. The connections and their handshakes are set up
  before the window: it measures the record layer.
- **Full handshakes**: every message is a new connection: connect, full handshake, one 64 B round
  trip, close_notify and close, with that many connections at a time. msgs/s is handshakes per
  second; the latency runs from `connect(2)` to the echo's last byte; the server's CPU per
  message is its CPU per handshake, which includes the TCP accept and close, the echo, and the
  session tickets a TLS 1.3 server sends after every handshake.
- **Resumed handshakes**: the same, each new connection resuming its predecessor's session with a
  TLS 1.3 ticket (a key exchange still, but no certificate and no signature). It offers a copy of
  the newest ticket it has: OpenSSL clients use a ticket once, and Node.js sends no new ticket
  after a resumed handshake, so the same ticket is offered again, which stateless tickets allow. A
  run in which fewer than {resume_min} % of the handshakes resumed fails.

"loadgen CPU µs/msg" is the load generator's own CPU time (user + system) per message. The
client's half of a handshake costs about as much as the server's, and each side has one core: when
the load generator's core is near 100 % busy, it is the bottleneck, handshakes/s compares the
servers poorly, and the server's CPU per handshake still compares them. Ratios are to the C
reference TLS server (`bench/peers/ref_tls_echo.c`).
"""

TLS_IDLE_TEXT = """\
As "Idle connections", over TLS: the RSS growth per connection, each after a full handshake
(ECDSA P-256) and one 64 B round trip. The load generator runs at most 256 handshakes at a time,
and memory a server frees after a handshake mostly stays in its heap, so a run with few
connections overstates the figure. nginx's figure includes its backend (`ref_echo`, about
0.1 KiB per connection); nginx allocates its connection structures (`worker_connections`) at
start, so they are in its RSS at start, not in the growth.
"""

TLS_SERVERS_TEXT = """\
| server | file | TLS echo |
|---|---|---|
| C reference | `bench/peers/ref_tls_echo.c` | libev; OpenSSL on the socket, non-blocking; one `SSL_read` into a shared 64 KiB buffer, written straight back with `SSL_write`; read-ahead, buffers released while idle (`SSL_MODE_RELEASE_BUFFERS`), no server-side session cache (TLS 1.3 resumes with stateless tickets) |
| luasock | `{tls_script}` | a `tls:` listener with `--tls-cert` / `--tls-key`; the handshake runs in the core before the handler |
| Node.js | `bench/peers/tls_echo.js` | `tls.createServer`, `socket.write(chunk)` per `data` event |
| Python asyncio | `bench/peers/tls_echo_asyncio.py` | `asyncio.Protocol` on `create_server(ssl=SSLContext)` |
| nginx | `build/bench/run/nginx/nginx.conf`, written by `bench/run` | Debian's nginx-light with its stream module: one process (`master_process off`), `listen ... ssl`, `proxy_pass` in plain TCP to `bench/peers/ref_echo` (the usual way to put TLS in front of a plaintext service); nginx and the backend are pinned to the server's core, and their CPU time and RSS are summed |

Every server has TLS 1.2 and 1.3 enabled and the library's defaults otherwise (session tickets
on); nginx 1.22's default protocols lack TLS 1.3, so its configuration names both.
"""

RESULTS_TEXT = """\
"user instr/msg" is the user-space instructions per message that valgrind counted (next
section) for the same load and a fixed number of messages: 64 B echo and lines, not Node.js.
"""


def runs_text(runs):
    return {"1": "once", "2": "twice"}.get(runs, f"{runs} times")


def instructions_only(args):
    """bench/run --instructions: the instruction counts alone, printed and in --doc."""
    instr_rows = load(args.instructions)
    instructions = instructions_table(instr_rows)
    failed = failures(instr_rows, "instruction count, run")
    print("\nInstructions per message\n" + instructions)
    if failed:
        print("\nFailed\n" + "\n".join(failed))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    quick = "**Quick run: small counts, not the real figures.** " if args.quick else ""
    parts = [
        "# Instructions per message\n" + f"{quick}Written by `bench/run --instructions` (run of "
        f"{date}, measurements done in {int(args.seconds) // 60} min {int(args.seconds) % 60} s) "
        "for " + luasock_description(args.luasock) + f", `{args.luasock}`. "
        "docs/benchmarks.md explains the method.",
        instructions,
        INSTR_TEXT.format(runs=runs_text(args.instr_runs), spread=round(INSTR_SPREAD_MAX * 100)),
        "## Machine\n" + table(["", ""], machine(args)),
    ]
    if failed:
        parts.append("## Failures in this run\n" + "\n".join(failed))
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p.rstrip("\n") for p in parts) + "\n")
    print(f"\nbench: wrote {args.doc}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--doc", required=True)
    parser.add_argument("--chart", default="")
    parser.add_argument("--duration", required=True)
    parser.add_argument("--luasock", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--load", default="")
    parser.add_argument("--network", default="loopback")
    parser.add_argument("--rounds", default="1")
    parser.add_argument("--seconds", default="0", help="how long the measurements took")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tls-script", default="examples/tls_echo.lua",
                        help="the script luasock serves the TLS workloads with")
    parser.add_argument("--instructions", help="the instruction counts (instructions.tsv)")
    parser.add_argument("--instr-runs", default="1")
    parser.add_argument("--only-instructions", action="store_true")
    args = parser.parse_args()
    if args.only_instructions:
        return instructions_only(args)
    if not args.chart:
        parser.error("--chart is needed without --only-instructions")

    instr_rows = load(args.instructions) if args.instructions else []
    all_rows = load(args.results)
    rows = best_rounds(all_rows)
    instr_counts = add_instructions(rows, instr_rows)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    targets, idle = targets_table(rows, args.quick, instr_counts), idle_table(rows, "idle")
    results = throughput_table(rows, ("echo", "line"), THROUGHPUT_COLUMNS)
    tls_results = throughput_table(rows, ("tls",) + HANDSHAKE_MODES, TLS_COLUMNS)
    tls_idle = idle_table(rows, "tls_idle")
    chat_results, reloads = throughput_table(rows, ("chat",), CHAT_COLUMNS), reload_table(rows)
    failed = failures(all_rows) + failures(instr_rows, "instruction count, run")
    instructions = (instructions_table(instr_rows) if instr_rows
                    else "Not measured in this run (`bench/run --no-instructions`).")
    instr_text = INSTR_TEXT.format(runs=runs_text(args.instr_runs),
                                   spread=round(INSTR_SPREAD_MAX * 100))

    print("\nTargets\n" + targets + "\n\nResults\n" + results + "\n\nInstructions per message\n"
          + instructions + "\n\nChat\n" + chat_results + "\n\nReload under load\n" + reloads
          + "\n\nIdle\n" + idle + "\n\nTLS\n" + tls_results + "\n\nIdle TLS\n" + tls_idle)
    if failed:
        print("\nFailed\n" + "\n".join(failed))

    png_name = os.path.basename(args.chart)
    chart(rows, os.path.abspath(args.chart), os.path.dirname(os.path.abspath(args.results)),
          f"luasock benchmark, {date}, {args.duration} s per workload")
    quick = "**Quick run: small counts, not the real figures.** " if args.quick else ""
    rounds = "one round" if args.rounds == "1" else f"{args.rounds} rounds"
    elapsed = divmod(int(args.seconds), 60)
    parts = [
        INTRO.format(date=date, duration=args.duration, quick=quick, rounds=rounds,
                     elapsed=f"{elapsed[0]} min {elapsed[1]} s"),
        "## Machine\n" + table(["", ""], machine(args)),
        "## Targets\nFor luasock with one worker, from the ratios of this run. The throughput, "
        "user and system CPU targets apply to the three byte-echo workloads; the reload targets "
        "are explained under \"Reload under load\"; the TLS targets (issue 14) compare the "
        "server's CPU time (user + system) per message or per handshake; the instruction, lines/s, "
        "chat and idle-versus-asyncio targets (issue 18) take the instruction counts and the "
        "ratios of this run. \"(close)\" marks a "
        f"figure within {CLOSE:.0%} of its bound: between runs on this machine such verdicts "
        "have gone either way.\n\n" + targets,
        "## Results\n" + RESULTS_TEXT + "\n" + results,
        "## Instructions per message\n" + (instr_text + "\n" if instr_rows else "")
        + instructions,
        "## Chat\n" + CHAT_TEXT + "\n" + chat_results,
        "## Reload under load\n" + (reload_text(rows) + "\n" if reloads != NOT_MEASURED else "")
        + reloads,
        "## Idle connections\n" + idle,
        "## TLS\n" + TLS_TEXT.format(resume_min=RESUME_MIN_PCT) + "\n" + tls_results
        + "\n\n### Idle TLS connections\n" + TLS_IDLE_TEXT + "\n" + tls_idle,
        "### The TLS servers\n" + TLS_SERVERS_TEXT.format(tls_script=args.tls_script),
    ]
    if failed:
        parts.append("## Failures in this run\n" + "\n".join(failed))
    parts += [f"## Chart\n![user CPU per message, messages per second and RSS per idle "
              f"connection, per server and workload]({png_name})", METHOD.format(clean=CLEAN_OTHERS_MAX)]
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p.rstrip("\n") for p in parts) + "\n")
    print(f"\nbench: wrote {args.doc} and {args.chart}")


if __name__ == "__main__":
    sys.exit(main())
