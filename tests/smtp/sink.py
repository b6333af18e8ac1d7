"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, keeping every message it receives.

Usage: sink.py DIR --port PORT

Listens on PORT (the caller picks it, outside the ephemeral range), prints it on stdout once
it accepts connections, and writes each message it accepts into DIR as two files: `<n>.eml`,
the bytes received, and `<n>.json`, what Python's `email` parser reads from them (envelope,
headers, and each text part decoded). A `.json` file appears whole (written, then renamed), so a
reader never sees half a message. Stops when stdin closes (the test that started it ended).
"""

import argparse
import email
import email.policy
import itertools
import json
import os
import sys
import threading

from aiosmtpd.controller import Controller


class Keep:
    """Accepts every message and writes it into a directory."""

    def __init__(self, directory):
        self.directory = directory
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            parts.append(
                {
                    "content_type": part.get_content_type(),
                    "charset": part.get_content_charset(),
                    "body": part.get_content(),
                }
            )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content_type": message.get_content_type(),
            "headers": {name: str(value) for name, value in message.items()},
            "parts": parts,
        }
        with self.lock:
            n = next(self.numbers)
        base = os.path.join(self.directory, f"{n:06}")
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        with open(base + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    # Chosen by the caller (test-support's `ports`), outside the ephemeral range.
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    port = args.port
    controller = Controller(Keep(args.directory), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
