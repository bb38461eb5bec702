"""Fixtures of the browser tests: one IdP (gunicorn, MFA plugin, real SMTP, SMS webhook), the
demo apps when a test asks for them, and one Chromium per test process (each xdist worker that
gets browser tests starts its own); a fresh browser context for every person in every test.

Every test creates its own accounts and phone numbers, so tests sharing a server do not meet.
Chromium and axe-core are put in place by ``tests/browser/setup.sh`` (``make test`` runs it).
The tests carry the ``browser`` marker: ``pytest -m "not browser"`` leaves them out.
"""

from __future__ import annotations

import pytest

from tests.browser.support import (
    AXE_SCRIPT,
    CHROMIUM,
    CHROMIUM_ARGS,
    WIDE_VIEWPORT,
    DemoApps,
    IdpServer,
    Journey,
    Person,
    RelyingParty,
    application_pages,
)
from tests.http_receivers import WebhookReceiver
from tests.smtp_server import SmtpServer

SETUP_HINT = "run tests/browser/setup.sh (make test does) to install Chromium and axe-core"
TERMS = """Informed Delivery terms of use

1. You may preview the mail addressed to you.
2. Images are kept for seven days.
"""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser/" in item.nodeid:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.browser_test_failed = report.failed


@pytest.fixture(scope="session")
def idp(tmp_path_factory):
    """The IdP with three applications registered through its command line."""
    directory = tmp_path_factory.mktemp("browser-idp")
    mail = SmtpServer().start()
    sms = WebhookReceiver()
    apps = application_pages()
    server = IdpServer(directory, mail, sms, apps)
    try:
        server.start()
        server.register_client(
            "cns", "Click-N-Ship", "Print shipping labels and schedule pickups.",
            "Click-N-Ship help: 1-800-555-0101", "--mfa-policy", "cohort",
            "--remembered-devices", scope="openid profile email offline_access")
        terms = directory / "terms.txt"
        terms.write_text(TERMS, encoding="utf-8")
        server.register_client(
            "mailbox", "Informed Delivery", "Preview the mail coming to you.",
            "Informed Delivery help: 1-800-555-0102", "--mfa-policy", "cohort",
            "--remembered-devices", "--terms-file", str(terms))
        server.register_client(
            "cop", "Customer Onboarding Portal", "Open a business account.",
            "COP help: 1-800-555-0103", "--mfa-policy", "always", "--no-remembered-devices")
        yield server
    finally:
        server.stop()
        leaks = server.log_leaks()
        apps.stop()
        sms.stop()
        mail.stop()
    assert not leaks, "secrets in the IdP's log:\n" + "\n".join(leaks)


@pytest.fixture(scope="session")
def demo_apps(idp, tmp_path_factory):
    """Click-N-Ship, Informed Delivery and the Customer Onboarding Portal from
    ``examples/relying_party``, signing in at ``idp``."""
    apps = DemoApps(idp, tmp_path_factory.mktemp("demo-apps"))
    try:
        yield apps.start()
    finally:
        apps.stop()


@pytest.fixture(scope="session")
def chromium():
    if not AXE_SCRIPT.exists():
        pytest.fail(f"{AXE_SCRIPT} is missing: {SETUP_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                 timeout=30_000)
        except Exception as exc:  # whatever stops the launch, the fix is the same
            pytest.fail(f"Chromium did not start ({exc}): {SETUP_HINT}")
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def journey(request):
    return Journey(request.node.name)


@pytest.fixture
def person(idp, chromium, journey, request):
    """``person("label")``: someone at a browser of their own (a new context, no cookies)."""
    people: list[Person] = []

    def new_person(label: str = "browser", server: IdpServer | None = None,
                   **context_options) -> Person:
        """``server``: another IdP than the shared one; ``context_options``: Playwright's
        (``java_script_enabled=False`` for a browser without JavaScript)."""
        context = chromium.new_context(viewport=WIDE_VIEWPORT, locale="en-US",
                                       **context_options)
        people.append(Person(server or idp, context, journey, label,
                             javascript=context_options.get("java_script_enabled", True)))
        return people[-1]

    yield new_person
    try:
        if getattr(request.node, "browser_test_failed", False):
            for someone in people:
                if not someone.page.is_closed():
                    journey.directory.mkdir(parents=True, exist_ok=True)
                    someone.page.screenshot(
                        path=str(journey.directory / f"failed-{someone.label}.png"),
                        full_page=True)
        else:
            for someone in people:
                assert someone.unchecked_pages() == 0, (
                    f"{someone.label}: {someone.unchecked_pages()} page(s) not checked")
                assert not someone.csp_violations, (
                    f"{someone.label}: Content-Security-Policy violations: "
                    f"{someone.csp_violations}")
    finally:
        for someone in people:
            someone.context.close()


@pytest.fixture
def cns(idp):
    """Click-N-Ship: MFA by the account's cohort; remembered devices allowed."""
    return RelyingParty(idp, idp.clients["cns"])


@pytest.fixture
def informed_delivery(idp):
    """Informed Delivery: like Click-N-Ship, with terms to accept on the first visit."""
    return RelyingParty(idp, idp.clients["mailbox"])


@pytest.fixture
def cop(idp):
    """Customer Onboarding Portal: MFA for every account, no remembered devices."""
    return RelyingParty(idp, idp.clients["cop"])
