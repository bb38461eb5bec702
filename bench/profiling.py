"""Where the in-process benchmark's time goes (``python -m bench.inprocess``): the cProfile
report and its call tree, timers patched onto chosen functions, and the IdP code behind a SQL
statement."""

from __future__ import annotations

import importlib
import io
import os
import pstats
import re
import time
from collections import defaultdict

from bench.server import ROOT


def package_of(filename: str) -> str:
    """``sqlalchemy``, ``jinja2``, ``idp/auth``… for a profiled function's file."""
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1].split("/", 1)[0]
    for root in ("/idp/", "/plugins/", "/bench/"):
        if root in filename:
            rest = filename.split(root, 1)[1]
            return root.strip("/") + ("/" + rest.split("/", 1)[0] if "/" in rest else "")
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib/" + filename.rsplit("/", 1)[-1]


def _relative(filename: str) -> str:
    """A file's path inside the project or site-packages, else as it is."""
    return filename.split("site-packages/")[-1].removeprefix(str(ROOT) + "/")


def short_name(function: tuple) -> str:
    filename, line, name = function
    filename = _relative(filename)
    return f"{filename.rsplit('/', 2)[-1] if filename.startswith('/') else filename}:{line} {name}"


def print_tree(stats, pattern: str, operations: int, depth: int) -> None:
    """Cumulative time per operation of the functions matching ``pattern`` and of what they
    call, ``depth`` levels down (callees under 2 % of their caller left out)."""
    callees: dict[tuple, list[tuple[tuple, float]]] = defaultdict(list)
    for function, (_cc, _nc, _tt, _ct, callers) in stats.stats.items():
        for caller_function, timing in callers.items():
            callees[caller_function].append((function, timing[3]))

    def walk(function, cumulative, level):
        print(f"{'  ' * level}{cumulative / operations * 1000:8.3f} ms  {short_name(function)}")
        if level >= depth:
            return
        for callee, seconds in sorted(callees[function], key=lambda c: -c[1]):
            if seconds >= 0.02 * cumulative:
                walk(callee, seconds, level + 1)

    for function, (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if re.search(pattern, short_name(function)):
            walk(function, ct, 0)


def caller() -> str:
    """The innermost frame of the IdP's own code (``file:line function``), and its caller."""
    import traceback

    own = [frame for frame in traceback.extract_stack()
           if ("/idp/" in frame.filename or "/plugins/" in frame.filename)]
    return " < ".join(f"{_relative(f.filename)}:{f.lineno} {f.name}"
                      for f in reversed(own[-2:]))


def install_timers(specs: list[str], timed: dict[str, float]) -> None:
    """Replace each ``module:function`` (or ``module:Class.method``) by a wrapper that adds
    its CPU time to ``timed[spec]``."""
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        owner = importlib.import_module(module_name)
        *path, attribute = attribute.split(".")
        for name in path:
            owner = getattr(owner, name)
        original = getattr(owner, attribute)

        def timer(*a, __original=original, __spec=spec, **k):
            started = time.process_time()
            try:
                return __original(*a, **k)
            finally:
                timed[__spec] += time.process_time() - started

        setattr(owner, attribute, timer)


def print_profile(stats: pstats.Stats, operations: int) -> None:
    """The profile as the ``BENCH_PROFILE_*`` variables ask, the time per package and the
    busiest built-in functions."""
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(
        int(os.environ.get("BENCH_PROFILE_LINES", "60")))
    if os.environ.get("BENCH_PROFILE_CALLERS"):
        stats.print_callers(os.environ["BENCH_PROFILE_CALLERS"])
    print(out.getvalue())
    if os.environ.get("BENCH_PROFILE_TREE"):
        print_tree(stats, os.environ["BENCH_PROFILE_TREE"], operations,
                   int(os.environ.get("BENCH_PROFILE_DEPTH", "3")))
    print("own time by package:")
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        by_package[package_of(filename)] += tottime
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {package:40} {seconds:7.3f} s")
    print("built-in functions by own time:")
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("tottime").print_stats("{", 15)
    print(out.getvalue().split("filename:lineno(function)", 1)[-1])
