"""Summarise a py-spy ``--format raw --threads`` profile (collapsed stacks) of the server.

Run: ``.venv/bin/python benchmarks/http/profile_summary.py PROFILE.txt [--top 25] [--idle]``

Prints the samples per thread, then the frames with the most inclusive samples (a frame counted
once per stack) and the most self samples. Idle stacks (threads waiting in ``select``/``epoll``,
on a queue or a lock) are left out unless ``--idle``, so the figures are where CPU goes.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = re.compile(
    r"(select \(selectors|_run_once \(asyncio/base_events.py:\d+\)$|Condition\.wait|"
    r"Queue\.get|_worker \(concurrent/futures/thread.py:81\)$|Event\.wait \(threading)"
)
FRAME = re.compile(r"^(.*) \(([^()]*):\d+\)$")


def short(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``: lines merged."""
    found = FRAME.match(frame)
    return f"{found.group(1)} ({found.group(2)})" if found else frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true", help="keep idle stacks")
    args = parser.parse_args()
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if not args.idle and IDLE.search(frames[-1]):
            continue
        count = int(count_text)
        total += count
        thread = frames[0]
        thread = "event loop (main)" if "MainThread" in thread else thread.split(":")[-1].strip()
        threads[thread] += count
        for name in {short(f) for f in frames[1:]}:
            inclusive[name] += count
        own[short(frames[-1])] += count
    if not total:
        print("no samples")
        return
    print(f"{total} busy samples")
    print("\nper thread:")
    for name, count in threads.most_common():
        print(f"  {count / total:6.1%}  {name}")
    print(f"\ninclusive (top {args.top}):")
    for name, count in inclusive.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")
    print(f"\nself (top {args.top}):")
    for name, count in own.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
