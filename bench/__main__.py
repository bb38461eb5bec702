"""``python -m bench``: the benchmark (``make bench``). See docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.load import paced, saturate
from bench.results import LATENCY_TARGET, Totals, latency_spread, print_report
from bench.scenarios import (
    CEILING,
    REFERENCE,
    SCENARIOS,
    Scenario,
    Workload,
    ceiling_workload,
    reference_workload,
)
from bench.server import Gunicorn, Instance, Sinks, load_average, pinning


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the IdP under gunicorn (one worker on CPU 0, this load "
                    "generator on CPU 1) and print every figure beside its target.")
    parser.add_argument("--duration", type=float, default=6.0,
                        help="measured seconds of each API scenario on each database, split "
                             "over the rounds (default 6)")
    parser.add_argument("--sign-in-duration", type=float, default=15.0,
                        help="measured seconds of the sign-in on each database (default 15); "
                             "the argon2id ceiling gets two thirds of it")
    parser.add_argument("--paced-duration", type=float, default=3.0,
                        help="seconds of each below-saturation measurement (default 3; "
                             "the sign-in gets twice as long)")
    parser.add_argument("--paced-load", type=float, default=0.5,
                        help="below saturation: the rate as a fraction of the saturated rate "
                             "(default 0.5)")
    parser.add_argument("--paced-tries", type=int, default=3,
                        help="below saturation: measure again, up to this many times, while "
                             "p99 > 2 x p50, and keep the calmest try (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the saturated measurements are interleaved in this many rounds "
                             "(default 3)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unmeasured seconds before the first round of each scenario")
    parser.add_argument("--small", type=int, default=1000, help="accounts of the first database")
    parser.add_argument("--large", type=int, default=100_000,
                        help="accounts of the second database (0: skip it)")
    parser.add_argument("--only", nargs="+", metavar="SCENARIO",
                        choices=[s.name for s in SCENARIOS],
                        help="run these scenarios only (healthz, the bare Flask app and, with "
                             "sign-in, the argon2id ceiling are always run)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run, not for the record: a third of the saturated "
                             "durations, half the paced ones, two rounds, at most 20 000 "
                             "accounts in the second database")
    parser.add_argument("--verbose", action="store_true",
                        help="print every measurement as it is made")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (databases, server logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration /= 3
        args.sign_in_duration /= 3
        args.paced_duration /= 2
        args.rounds = min(args.rounds, 2)
        args.large = min(args.large, 20_000)
    if (args.rounds < 1 or args.paced_tries < 1 or args.duration <= 0
            or args.sign_in_duration <= 0 or args.paced_duration <= 0):
        parser.error("--rounds, --paced-tries and the durations must be positive")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.server_cpu, self.client_cpu, self.pinning = pinning()
        names = args.only or [s.name for s in SCENARIOS]
        self.scenarios = [s for s in SCENARIOS if s.name == "healthz" or s.name in names]
        self.with_ceiling = any(s.kind == "sign-in" for s in self.scenarios)
        self.results: dict[tuple[str, str], Totals] = {}
        self.requests_per_sign_in = math.nan
        self.setup_notes: list[str] = []

    def say(self, text: str) -> None:
        print(text, flush=True)

    # -- setting up ------------------------------------------------------------------

    def set_up(self, root: Path) -> None:
        self.sinks = Sinks(self.client_cpu)
        sizes = [("small", self.args.small)]
        if self.args.large:
            sizes.append(("large", self.args.large))
        self.instances = {name: Instance(root, f"idp-{name}", self.sinks) for name, _ in sizes}
        started = time.monotonic()
        with ThreadPoolExecutor(len(sizes)) as pool:
            seeded = dict(zip([n for n, _ in sizes], pool.map(
                lambda item: self.instances[item[0]].set_up(item[1]), sizes), strict=True))
        for name, info in seeded.items():
            self.setup_notes.append(
                f"{name}: {info['users']:,} accounts, argon2id t={info['argon2']['time_cost']} "
                f"m={info['argon2']['memory_cost_kib']} KiB p={info['argon2']['parallelism']}")
        self.say(f"set up in {time.monotonic() - started:.0f} s: " + "; ".join(self.setup_notes))
        if self.client_cpu is not None:
            os.sched_setaffinity(0, {self.client_cpu})
        for instance in self.instances.values():
            instance.start(self.server_cpu)
        env = dict(self.instances["small"].env)
        self.ceiling = None
        if self.with_ceiling:
            self.ceiling = Gunicorn(env, root / "argon2.log", app="bench.argon2_app:app",
                                    cpu=self.server_cpu).start()
        # The framework's own rate under the same gunicorn settings: the API targets' base.
        self.reference = Gunicorn(env, root / "flask.log", app="bench.flask_app:app",
                                  cpu=self.server_cpu).start()

    def stop(self) -> None:
        for instance in getattr(self, "instances", {}).values():
            instance.stop()
        for server in (getattr(self, "ceiling", None), getattr(self, "reference", None)):
            if server is not None:
                server.stop()
        if getattr(self, "sinks", None) is not None:
            self.sinks.stop()

    # -- measuring -------------------------------------------------------------------

    def duration_of(self, scenario: Scenario) -> float:
        if scenario.kind == "sign-in":
            return self.args.sign_in_duration
        if scenario.kind == "ceiling":
            return self.args.sign_in_duration * 2 / 3
        return self.args.duration

    def own_server(self, scenario: Scenario):
        """(results key, server, workload) of a scenario with a server of its own (the
        argon2id ceiling, the Flask reference), else None."""
        if scenario.kind == "ceiling":
            return "argon2", self.ceiling, self.ceiling_load
        if scenario.kind == "reference":
            return "flask", self.reference, self.reference_load
        return None

    async def measure(self) -> None:
        workloads = {name: Workload(instance) for name, instance in self.instances.items()}
        ceiling = self.ceiling_load = (ceiling_workload(self.ceiling.url) if self.ceiling
                                       else None)
        self.reference_load = reference_workload(self.reference.url)
        try:
            for workload in workloads.values():
                await workload.prepare()
            order = [REFERENCE, *self.scenarios]
            if ceiling:
                order.append(CEILING)
            rounds = self.args.rounds
            for number in range(rounds):
                self.say(f"round {number + 1}/{rounds} (load average {load_average()})")
                for scenario in order:
                    per_round = self.duration_of(scenario) / rounds
                    warmup = self.args.warmup if number == 0 else 0.3
                    if scenario.kind != "api":
                        warmup = max(warmup, 1.0)
                    own = self.own_server(scenario)
                    targets = ([(own[0], own[1], own[2].users, own[2].operation)] if own else
                               [(name, w.instance.server, w.users[scenario.name],
                                 w.operation(scenario.name)) for name, w in workloads.items()])
                    for where, server, users, operation in targets:
                        m = await saturate(operation, users, per_round, warmup,
                                           server.cpu_seconds)
                        totals = self.results.setdefault((where, scenario.name), Totals())
                        totals.add(m)
                        totals.note_memory(server)
                        if self.args.verbose:
                            self.say(f"  {scenario.name:<18} {where:<6} {m.rate:9.1f}/s "
                                     f"p50 {m.percentile(0.5) * 1000:7.2f} ms  "
                                     f"cpu {m.cpu_per_operation * 1000:7.2f} ms  "
                                     f"srv {m.server_busy:4.0%} gen {m.client_busy:4.0%} "
                                     f"errors {m.errors}")
            self.say(f"below saturation (load average {load_average()})")
            small = workloads["small"]
            for scenario in order:
                own = self.own_server(scenario)
                totals = self.results[(own[0] if own else "small", scenario.name)]
                rate = totals.saturated.rate * self.args.paced_load
                if rate <= 0 or scenario.kind == "reference":
                    continue
                if own:
                    server, users, operation = own[1], own[2].users, own[2].operation
                else:
                    server = small.instance.server
                    users, operation = small.users[scenario.name], small.operation(scenario.name)
                duration = self.args.paced_duration * (1 if scenario.kind == "api" else 2)
                # Neighbours only ever add latency: a measurement that misses is made again
                # (up to --paced-tries times) and the calmest one is kept.
                for attempt in range(1, self.args.paced_tries + 1):
                    since = server.access_log_size()
                    measured = await paced(operation, users, rate, duration, 0.5,
                                           server.cpu_seconds)
                    spread = latency_spread(measured)
                    if totals.paced is None or spread < latency_spread(totals.paced):
                        totals.paced = measured
                        totals.server_times = server.request_times(since)
                        totals.paced_tries = attempt
                    if spread <= LATENCY_TARGET:
                        break
                totals.note_memory(server)
            signin = workloads["small"].signin
            if signin.completed:
                self.requests_per_sign_in = signin.requests / signin.completed
        finally:
            for workload in workloads.values():
                await workload.close()
            if ceiling:
                await ceiling.close()
            await self.reference_load.close()

    # -- reporting -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    root = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    try:
        bench.say(f"idp bench: {bench.pinning}; load average {load_average()}; "
                  f"folder {root}")
        bench.set_up(root)
        asyncio.run(bench.measure())
        ok = print_report(bench)
        bench.say(f"done in {time.monotonic() - started:.0f} s; "
                  + ("every target met" if ok else "some targets missed"))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bench.stop()
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
