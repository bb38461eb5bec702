"""The benchmark's results: each scenario's measurements added up over the rounds, the
targets, and the report that prints every figure beside its target (docs/performance.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import report
from bench.load import Measurement
from bench.scenarios import CEILING, REFERENCE
from bench.server import Gunicorn, load_average

if TYPE_CHECKING:
    from bench.__main__ import Bench

MIB = 1024 * 1024
#: scenario -> the least ratio of the reference's server CPU per operation to the scenario's:
#: the bare Flask app's /healthz for every request, the argon2id ceiling for the sign-in.
TARGETS = {
    "healthz": 0.85, "discovery": 0.9, "jwks": 0.9, "userinfo": 0.6,
    "client_credentials": 0.5, "refresh": 0.4, "sign-in": 0.65,
}
ARGON2_CPU_TARGET = 0.040  # seconds of CPU per verification, at most
SIGN_IN_OTHER_CPU_TARGET = 0.015  # seconds of CPU per sign-in besides the password check
LATENCY_TARGET = 2.0  # p99 <= 2 x p50 below saturation
RSS_TARGET = 120 * MIB
LARGE_SLOWDOWN_TARGET = 0.10


@dataclass
class Totals:
    """Measurements of one scenario on one server, added up over the rounds."""

    saturated: Measurement = field(default_factory=Measurement)
    paced: Measurement | None = None
    server_times: list[float] = field(default_factory=list)
    paced_tries: int = 0  # the try that was kept
    memory: dict = field(default_factory=lambda: {"VmRSS": 0, "VmHWM": 0})

    def add(self, m: Measurement) -> None:
        s = self.saturated
        s.operations += m.operations
        s.errors += m.errors
        s.latencies += m.latencies
        s.elapsed += m.elapsed
        s.server_cpu += m.server_cpu
        s.client_cpu += m.client_cpu
        s.first_error = s.first_error or m.first_error

    def note_memory(self, server: Gunicorn) -> None:
        seen = server.worker_memory()
        for key in self.memory:
            self.memory[key] = max(self.memory[key], seen[key])


def print_report(bench: Bench) -> bool:
    """Print every figure beside its target; True when every target is met."""
    verdicts: list[tuple[str, bool]] = []
    reference = bench.results[("flask", REFERENCE.name)].saturated
    ceiling = bench.results.get(("argon2", CEILING.name))
    small = bench.args.small
    order = [REFERENCE, *bench.scenarios, *([CEILING] if ceiling else [])]
    rows = []
    for scenario in order:
        m = bench.results[(where_of(scenario), scenario.name)].saturated
        ratio = rate_ratio = target = passed = None
        if scenario.name in TARGETS and (scenario.kind != "sign-in" or ceiling):
            base = ceiling.saturated if scenario.kind == "sign-in" else reference
            ratio = base.cpu_per_operation / m.cpu_per_operation
            rate_ratio = m.rate / base.rate if base.rate else math.nan
            target = TARGETS[scenario.name]
            passed = ratio >= target and m.errors == 0
            verdicts.append((f"{scenario.name} ratio", passed))
        rows.append([
            scenario.name, report.number(m.rate),
            report.number(m.percentile(0.5) * 1000, 2),
            report.number(m.percentile(0.99) * 1000, 2), str(m.errors),
            report.number(m.cpu_per_operation * 1000, 2),
            "ref" if scenario.kind in ("reference", "ceiling") else report.number(ratio, 2),
            (f">= {target:.2f} x " + ("argon2id" if scenario.kind == "sign-in"
                                      else "flask")) if target else "",
            report.verdict(passed), report.number(rate_ratio, 2),
            f"{m.server_busy:.0%}", f"{m.client_busy:.0%}",
        ])
    bench.say("")
    bench.say(f"Saturated throughput, {small:,} accounts ({bench.pinning}). One operation is "
              "a request; for sign-in a whole sign-in, for argon2id one verification.")
    bench.say("ratio: the reference's server CPU time per operation over the scenario's "
              "(= the rate ratio on a dedicated core); rate ratio: measured rates.")
    bench.say(report.table(
        ["scenario", "op/s", "p50 ms", "p99 ms", "errors", "CPU ms/op", "ratio", "target",
         "result", "rate ratio", "srv busy", "gen busy"], rows,
        right={1, 2, 3, 4, 5, 6, 9, 10, 11}))
    signin = bench.results.get(("small", "sign-in"))
    if signin and ceiling:
        s, c = signin.saturated, ceiling.saturated
        bench.say(f"sign-in: {s.rate:.2f} sign-ins/s, argon2id ceiling {c.rate:.2f} "
                  f"verifies/s: rate ratio {s.rate / c.rate:.2f}; "
                  f"{s.cpu_per_operation * 1000:.0f} ms CPU per sign-in, "
                  f"{c.cpu_per_operation * 1000:.0f} ms per verification: ratio "
                  f"{c.cpu_per_operation / s.cpu_per_operation:.2f} (target >= "
                  f"{TARGETS['sign-in']:.2f}); {bench.requests_per_sign_in:.1f} HTTP "
                  "requests per sign-in")
        rows = []
        for name, figure, target in (
                ("argon2id verification", c.cpu_per_operation, ARGON2_CPU_TARGET),
                ("sign-in besides the password", s.cpu_per_operation - c.cpu_per_operation,
                 SIGN_IN_OTHER_CPU_TARGET)):
            passed = figure <= target
            verdicts.append((f"{name} CPU", passed))
            rows.append([name, report.number(figure * 1000, 1),
                         f"<= {target * 1000:.0f}", report.verdict(passed)])
        bench.say("")
        bench.say("Server CPU per operation, ms (the sign-in's other work: a whole sign-in's "
                  "CPU less one verification's)")
        bench.say(report.table(["operation", "CPU ms", "target", "result"], rows))
    for (where, name), totals in bench.results.items():
        if totals.saturated.first_error:
            bench.say(f"first error in {name} ({where}): {totals.saturated.first_error}")

    rows = []
    for scenario in order:
        totals = bench.results[(where_of(scenario), scenario.name)]
        p = totals.paced
        if p is None:
            continue
        p50, p99 = p.percentile(0.5), p.percentile(0.99)
        spread = p99 / p50 if p50 else math.nan
        passed = spread <= LATENCY_TARGET and p.errors == 0
        verdicts.append((f"{scenario.name} p99/p50", passed))
        # a sign-in is eleven different requests: their spread says nothing about tails
        inside = Measurement(latencies=[] if scenario.kind == "sign-in"
                             else totals.server_times)
        s50, s99 = inside.percentile(0.5), inside.percentile(0.99)
        rows.append([scenario.name, report.number(p.rate), str(p.operations),
                     report.number(p50 * 1000, 2), report.number(p99 * 1000, 2),
                     str(p.errors), report.number(spread, 2),
                     f"<= {LATENCY_TARGET:.1f}", report.verdict(passed),
                     str(totals.paced_tries),
                     report.number(s50 * 1000, 2), report.number(s99 * 1000, 2),
                     report.number(s99 / s50 if s50 else math.nan, 2)])
    bench.say("")
    bench.say(f"Latency below saturation: operations started at {bench.args.paced_load:.0%} "
              f"of the saturated rate, evenly spaced ({small:,} accounts)")
    bench.say("p50/p99 as the load generator sees them; in the worker: the time per request "
              "in gunicorn's access log, for information")
    bench.say(report.table(["scenario", "op/s", "count", "p50 ms", "p99 ms", "errors",
                            "p99/p50", "target", "result", "try", "worker p50",
                            "worker p99",
                            "worker p99/p50"], rows))

    if "large" in bench.instances:
        large = bench.args.large
        rows = []
        for scenario in bench.scenarios:
            a = bench.results[("small", scenario.name)].saturated
            b = bench.results[("large", scenario.name)].saturated
            slower = b.cpu_per_operation / a.cpu_per_operation - 1
            rate_change = b.rate / a.rate - 1 if a.rate else math.nan
            passed = slower <= LARGE_SLOWDOWN_TARGET and b.errors == 0
            verdicts.append((f"{scenario.name} at {short(large)} accounts", passed))
            rows.append([scenario.name, report.number(a.cpu_per_operation * 1000, 2),
                         report.number(b.cpu_per_operation * 1000, 2),
                         f"{slower:+.1%}", f"<= +{LARGE_SLOWDOWN_TARGET:.0%}",
                         report.verdict(passed), str(b.errors), report.number(a.rate),
                         report.number(b.rate), f"{rate_change:+.1%}"])
        bench.say("")
        bench.say(f"{large:,} accounts against {small:,}, measured in the same rounds "
                  "(slower: server CPU time per operation)")
        bench.say(report.table(
            ["scenario", f"CPU ms {short(small)}", f"CPU ms {short(large)}", "slower",
             "target", "result", "errors", f"op/s {short(small)}",
             f"op/s {short(large)}", "rate change"], rows))

    rows = []
    servers = [(f"IdP, {short(i.users)} accounts", name)
               for name, i in bench.instances.items()]
    if ceiling:
        servers.append(("argon2id app", "argon2"))
    for label, where in servers:
        kept = [t.memory for (w, _), t in bench.results.items() if w == where]
        rss = max(m["VmRSS"] for m in kept)
        hwm = max(m["VmHWM"] for m in kept)
        passed = rss <= RSS_TARGET
        verdicts.append((f"{label} memory", passed))
        rows.append([label, report.number(rss / MIB), f"<= {RSS_TARGET // MIB}",
                     report.verdict(passed), report.number(hwm / MIB)])
    bench.say("")
    bench.say("Resident memory per worker, MiB (VmRSS: the largest seen after each "
              "measurement; VmHWM: the peak, with argon2id's working memory)")
    bench.say(report.table(["server", "VmRSS", "target", "result", "VmHWM"], rows))
    bench.say("")
    missed = [name for name, passed in verdicts if not passed]
    bench.say(f"targets met: {len(verdicts) - len(missed)} of {len(verdicts)}"
              + (f"; missed: {', '.join(missed)}" if missed else ""))
    bench.say(f"messages received by the sinks: {bench.sinks.stats()}; load average "
              f"{load_average()}")
    return not missed


def where_of(scenario) -> str:
    """The server a scenario's results are kept under."""
    return {"ceiling": "argon2", "reference": "flask"}.get(scenario.kind, "small")


def latency_spread(m: Measurement) -> float:
    p50 = m.percentile(0.5)
    return m.percentile(0.99) / p50 if p50 and not math.isnan(p50) else math.inf


def short(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)
