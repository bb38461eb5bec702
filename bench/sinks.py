"""Message sinks for the benchmark: an SMTP server and an SMS webhook receiver on loopback.

Production settings refuse the development outbox, so the IdP under test sends its email
(the new-device notice of every sign-in) by SMTP and would send text messages to a webhook.
Both sinks accept and discard what they receive and count it.

Run as its own process (``python -m bench.sinks SMTP_PORT SMS_PORT``), so that answering the
IdP never competes with the load generator for the GIL. It prints ``ready`` once both listen,
one line of counts on ``stats``, and exits when its standard input closes (the benchmark
ended, however it ended) or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading

HOST = "127.0.0.1"


class CountingHandler:
    """aiosmtpd handler: accepts every message and keeps only a count."""

    def __init__(self):
        self.messages = 0

    async def handle_DATA(self, server, session, envelope):
        self.messages += 1
        return "250 Message accepted for delivery"


async def _webhook(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   counts: dict) -> None:
    """A minimal HTTP/1.1 receiver: reads one request (headers and body), answers 200."""
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                await asyncio.wait_for(reader.readexactly(min(length, 1_000_000)), timeout=30)
            counts["sms"] += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(smtp_port: int, sms_port: int, max_seconds: float) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = CountingHandler()
    counts = {"sms": 0}
    smtp = await loop.create_server(lambda: SMTP(handler, hostname=HOST), HOST, smtp_port)
    sms = await asyncio.start_server(lambda r, w: _webhook(r, w, counts), HOST, sms_port)
    done = asyncio.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stats":
                print(f"email={handler.messages} sms={counts['sms']}", flush=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=max_seconds)
    smtp.close()
    sms.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sinks")
    parser.add_argument("smtp_port", type=int)
    parser.add_argument("sms_port", type=int)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.smtp_port, args.sms_port, args.max_seconds))


if __name__ == "__main__":
    main()
