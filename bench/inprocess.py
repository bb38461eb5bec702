"""``python -m bench.inprocess``: the IdP's own CPU time and SQL statements per request,
without gunicorn, network or load generator.

Sets up an instance as ``make bench`` does (production settings, the MFA plugin, SMTP to the
message sinks), then calls the WSGI application directly: each timed figure is the CPU time
(``time.process_time``) spent inside the application's ``__call__`` and the iteration of its
answer, the lowest of ``--batches`` batches, so that the machine's other work hardly moves
it. The sign-in is broken down by page; the argon2id verification is timed apart and taken
out of the password page's figure. ``--profile`` prints a cProfile of the chosen scenario.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import importlib
import io
import os
import pstats
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
API = ["healthz", "discovery", "jwks", "client_credentials", "refresh", "userinfo"]


class Meter:
    """Wraps the WSGI application: CPU time and SQL statements per request, by label."""

    def __init__(self, app):
        self.app = app
        self.label = "other"
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.statements: dict[str, int] = defaultdict(int)
        self.argon2 = 0.0

    def __call__(self, environ, start_response):
        started = time.process_time()
        try:
            body = b"".join(self.app(environ, start_response))
        finally:
            self.cpu[self.label] += time.process_time() - started
            self.count[self.label] += 1
        return [body]

    def reset(self) -> None:
        self.cpu.clear()
        self.count.clear()
        self.statements.clear()
        self.argon2 = 0.0


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


def short_name(function: tuple) -> str:
    filename, line, name = function
    filename = filename.split("site-packages/")[-1].split("/work/main/")[-1]
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
    return " < ".join(f"{f.filename.split('/work/main/')[-1]}:{f.lineno} {f.name}"
                      for f in reversed(own[-2:]))


def page_label(method: str, path: str) -> str:
    first = path.strip("/").split("/")
    name = "/".join(first[:2]) if first[0] in ("authorize", "mfa") else first[0]
    if first[0] == "authorize" and len(first) == 1:
        name = "authorize"
    return f"{method} /{name}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--batches", type=int, default=7,
                        help="batches of each scenario; the lowest is kept (default 7)")
    parser.add_argument("--requests", type=int, default=300,
                        help="requests per batch of the API scenarios (default 300)")
    parser.add_argument("--sign-ins", type=int, default=12,
                        help="sign-ins per batch (default 12)")
    parser.add_argument("--only", nargs="+", choices=[*API, "sign-in"])
    parser.add_argument("--profile", choices=[*API, "sign-in"],
                        help="print a cProfile (cumulative time) of one scenario")
    parser.add_argument("--time", nargs="+", default=[], metavar="MODULE:FUNCTION",
                        help="also time these functions (patched where they are looked up), "
                             "e.g. plugins.mfa.routes:_notify")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after the set-up (what a worker would gain by it)")
    parser.add_argument("--statements", choices=[*API, "sign-in"],
                        help="print the SQL statements of one operation of a scenario")
    args = parser.parse_args(argv)

    from bench.seed import USERNAME_FORMAT, totp_secret
    from bench.server import PASSWORD, Instance, Sinks

    root = Path(tempfile.mkdtemp(prefix="idp-inprocess-"))
    sinks = Sinks(None)
    try:
        instance = Instance(root, "idp", sinks)
        instance.set_up(max(200, args.batches * args.sign_ins * 2 + 20))
        os.environ.update(instance.env)
        import pyotp
        from flask.testing import FlaskClient
        from sqlalchemy import event

        from idp import create_app
        from idp import passwords as passwords_module
        from idp.auth import routes as auth_routes
        from idp.extensions import db

        app = create_app()
        meter = Meter(app.wsgi_app)
        app.wsgi_app = meter
        original_verify = passwords_module.verify_password

        def timed_verify(*a, **k):
            started = time.process_time()
            try:
                return original_verify(*a, **k)
            finally:
                meter.argon2 += time.process_time() - started

        auth_routes.verify_password = timed_verify
        timed: dict[str, float] = defaultdict(float)
        for spec in args.time:
            module_name, _, attribute = spec.partition(":")
            module = importlib.import_module(module_name)
            *owners, attribute = attribute.split(".")
            for owner in owners:
                module = getattr(module, owner)
            original = getattr(module, attribute)

            def timer(*a, __original=original, __spec=spec, **k):
                started = time.process_time()
                try:
                    return __original(*a, **k)
                finally:
                    timed[__spec] += time.process_time() - started

            setattr(module, attribute, timer)
        with app.app_context():
            engine = db.engine

        printing = []

        @event.listens_for(engine, "before_cursor_execute")
        def count(_conn, _cursor, statement, *_args, **_kwargs):
            meter.statements[meter.label] += 1
            if printing:
                print(f"{meter.label:24} {' '.join(statement.split())[:110]:110} "
                      f"{caller()}")

        base = instance.issuer
        client = instance.code_client
        service = instance.service_client
        accounts = iter(range(1, 10**9))
        step = int(time.time() // 30)

        def browser() -> FlaskClient:
            return app.test_client()

        def request(http, method, url, label=None, **kwargs):
            parts = urlsplit(url)
            path = parts.path + ("?" + parts.query if parts.query else "")
            meter.label = label or page_label(method, parts.path)
            return http.open(path, method=method, base_url=base, **kwargs)

        def sign_in(scope="openid profile email"):
            http = browser()
            number = next(accounts)
            username = USERNAME_FORMAT.format(number)
            code = pyotp.TOTP(totp_secret(instance.seed, username)).at(step * 30)
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            query = urlencode({
                "response_type": "code", "client_id": client.client_id,
                "redirect_uri": client.redirect_uri, "scope": scope, "state": "s",
                "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
            response = request(http, "GET", "/authorize?" + query)
            for _ in range(20):
                if response.status_code in (302, 303):
                    location = response.headers["location"]
                    if location.startswith(client.redirect_uri):
                        break
                    response = request(http, "GET", location)
                    continue
                assert response.status_code == 200, (response.status_code, response.text[:300])
                path = response.request.path
                form = {"csrf_token": CSRF.search(response.text).group(1)}
                if path.startswith("/signin/"):
                    form.update(username=username, password=PASSWORD, submit="Log In")
                elif path.startswith("/mfa/challenge/"):
                    form.update(passcode=code, submit="Submit")
                elif path.startswith("/consent/"):
                    form.update(allow="Allow")
                elif path.startswith("/terms/"):
                    form.update(agree="I Agree")
                else:
                    raise RuntimeError(f"unexpected page {path}")
                response = request(http, "POST", path, data=form)
            code_ = parse_qs(urlsplit(location).query)["code"][0]
            token = request(http, "POST", "/token", label="POST /token (code)",
                            auth=(client.client_id, client.secret),
                            data={"grant_type": "authorization_code", "code": code_,
                                  "redirect_uri": client.redirect_uri,
                                  "code_verifier": verifier})
            assert token.status_code == 200, token.text
            return token.get_json()

        offline = sign_in("openid profile email offline_access")
        refresh_token = offline["refresh_token"]
        access_token = offline["access_token"]
        http = browser()
        service_auth = (service.client_id, service.secret)

        def api(name: str) -> None:
            nonlocal refresh_token
            if name == "healthz":
                request(http, "GET", "/healthz", name)
            elif name == "discovery":
                request(http, "GET", "/.well-known/openid-configuration", name)
            elif name == "jwks":
                request(http, "GET", "/jwks.json", name)
            elif name == "client_credentials":
                request(http, "POST", "/token", name, auth=service_auth,
                        data={"grant_type": "client_credentials"})
            elif name == "refresh":
                answer = request(http, "POST", "/token", name,
                                 auth=(client.client_id, client.secret),
                                 data={"grant_type": "refresh_token",
                                       "refresh_token": refresh_token})
                refresh_token = answer.get_json()["refresh_token"]
            elif name == "userinfo":
                request(http, "GET", "/userinfo", name,
                        headers={"Authorization": f"Bearer {access_token}"})

        def run(name: str, n: int) -> None:
            for _ in range(n):
                if name == "sign-in":
                    sign_in()
                else:
                    api(name)

        if args.statements:
            run(args.statements, 2)
            printing.append(True)
            run(args.statements, 1)
            return

        if args.profile:
            run(args.profile, 3)
            profiler = cProfile.Profile()
            profiler.enable()
            run(args.profile, args.sign_ins if args.profile == "sign-in" else args.requests)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(
                int(os.environ.get("BENCH_PROFILE_LINES", "60")))
            if os.environ.get("BENCH_PROFILE_CALLERS"):
                stats.print_callers(os.environ["BENCH_PROFILE_CALLERS"])
            if os.environ.get("BENCH_PROFILE_TREE"):
                operations = args.sign_ins if args.profile == "sign-in" else args.requests
                print_tree(stats, os.environ["BENCH_PROFILE_TREE"], operations,
                           int(os.environ.get("BENCH_PROFILE_DEPTH", "3")))
            print(out.getvalue())
            print("own time by package:")
            by_package: dict[str, float] = defaultdict(float)
            for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in \
                    stats.stats.items():
                by_package[package_of(filename)] += tottime
            for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:25]:
                print(f"  {package:40} {seconds:7.3f} s")
            print("built-in functions by own time:")
            out = io.StringIO()
            stats.stream = out
            stats.sort_stats("tottime").print_stats("{", 15)
            print(out.getvalue().split("filename:lineno(function)", 1)[-1])
            return

        if args.gc_freeze:
            import gc

            gc.freeze()
        wanted = args.only or [*API, "sign-in"]
        if "healthz" not in wanted:
            wanted.insert(0, "healthz")
        api_cpu: dict[str, float] = {}
        for name in wanted:
            run(name, 3)  # warm-up
            best: dict[str, tuple[float, float, int]] = {}
            argon2_best = None
            total_cpu = total_argon2 = 0.0
            timed_best: dict[str, float] = {}
            for _ in range(args.batches):
                meter.reset()
                timed.clear()
                n = args.sign_ins if name == "sign-in" else args.requests
                run(name, n)
                total_cpu += sum(meter.cpu.values()) / n / args.batches
                total_argon2 += meter.argon2 / n / args.batches
                for label, cpu in meter.cpu.items():
                    per = cpu / n
                    if label not in best or per < best[label][0]:
                        best[label] = (per, meter.count[label] / n, meter.statements[label] / n)
                for spec, seconds in timed.items():
                    timed_best[spec] = min(timed_best.get(spec, seconds / n), seconds / n)
                if name == "sign-in":
                    argon2 = meter.argon2 / n
                    argon2_best = argon2 if argon2_best is None else min(argon2_best, argon2)
            for spec, seconds in timed_best.items():
                print(f"  {spec} in {name}: {seconds * 1000:.3f} ms per operation")
            if name != "sign-in":
                per, _, statements = best[name]
                api_cpu[name] = per
                ratio = (f"  {api_cpu['healthz'] / per:.2f} of healthz"
                         if "healthz" in api_cpu else "")
                print(f"{name:20} {per * 1000:7.3f} ms/request  {statements:5.1f} statements"
                      f"{ratio}")
                continue
            print("sign-in, per sign-in (the lowest batch for each page):")
            total = statements_total = requests_total = 0.0
            for label, (per, requests, statements) in sorted(best.items()):
                shown = per - (argon2_best if label == "POST /signin" else 0.0)
                total += shown
                statements_total += statements
                requests_total += requests
                print(f"  {label:28} {shown * 1000:7.2f} ms  {requests:4.1f} requests "
                      f"{statements:5.1f} statements")
            print(f"  {'argon2id verification':28} {argon2_best * 1000:7.2f} ms")
            print(f"  {'everything but argon2id':28} {total * 1000:7.2f} ms "
                  f"{requests_total:4.1f} requests {statements_total:5.1f} statements; "
                  f"ratio {argon2_best / (argon2_best + total):.3f}")
            print(f"  mean over all batches: {(total_cpu - total_argon2) * 1000:.2f} ms "
                  f"besides argon2id ({total_argon2 * 1000:.2f} ms)")
    finally:
        sinks.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
