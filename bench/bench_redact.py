"""Benchmark (not a test): recall, over-redaction and throughput of collector.redact on the corpus.

Reads tests/bundle/redaction_corpus/corpus.jsonl (secret-bearing lines in many formats and harmless
look-alikes). Recall: the share of secrets that are gone after redaction (a secret counts as leaked
when it, or its last 8 characters, is still in the output). Over-redaction: the share of harmless
lines that came out changed. Goals: recall 100 %, over-redaction <= 2 %.

Throughput: a realistic 20 MiB evidence text (journal, ps, config and the corpus lines mixed in)
through `Redactor.redact_bytes`, against two baselines measured in the same run: one plain `re`
scan for a single literal (`password`), and one scan for long tokens (`[A-Za-z0-9+/=_-]{20,}`).

    .venv/bin/python bench/bench_redact.py [--mib 20] [--repeat 3] [--show]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from collector.redact import Redactor

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "bundle" / "redaction_corpus" / "corpus.jsonl"
RECALL_GOAL = 1.0
OVER_GOAL = 0.02


def load(path: Path = CORPUS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def leaked(secret: str, out: str) -> bool:
    """A secret leaks when it, or its tail (what a value cut short at ; & , @ leaves), is still visible."""
    return secret in out or (len(secret) >= 12 and secret[-8:] in out)


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall and over-redaction of a fresh Redactor per line (no known secrets: the patterns alone)."""
    found = total = over = harmless = 0
    misses: list[tuple[str, str, str]] = []
    overs: list[tuple[str, str, str]] = []
    for row in rows:
        out = Redactor().redact_text(row["text"], "corpus")
        if row["kind"] == "secret":
            for secret in row["secrets"]:
                total += 1
                if leaked(secret, out):
                    misses.append((row["format"], row["text"], out))
                else:
                    found += 1
        else:
            harmless += 1
            if out != row["text"]:
                over += 1
                overs.append((row["format"], row["text"], out))
    formats = {r["format"] for r in rows if r["kind"] == "secret"}
    return {
        "recall": found / total if total else 1.0,
        "over": over / harmless if harmless else 0.0,
        "secrets": total,
        "secret_lines": sum(r["kind"] == "secret" for r in rows),
        "formats": len(formats),
        "harmless": harmless,
        "misses": misses,
        "overs": overs,
    }


def evidence(mib: float, rows: list[dict[str, Any]]) -> bytes:
    """Mostly ordinary journal/ps/config text, one corpus line in every 50."""
    plain = [
        "Dec  1 17:02:09 app1 sergas[4412]: GET /api/orders/{n} 200 0.0{n}s request_id=5f0c{n:04d}-aa1e",
        (
            "Dec  1 17:02:09 db1 postgres[88]: LOG:  duration: 1.{n} ms  "
            "statement: SELECT * FROM orders WHERE id = {n}"
        ),
        "root      {n}  0.0  0.1 /usr/bin/python3 /opt/sergas/app.py --workers 4 --port 8000",
        "keyspace_hits:{n}",
        "DB_POOL_SIZE=20",
        "commit 3f2a9c1d0b8e7f6a5d4c3b2a1f0e9d8c7b6a{n:04d}",
        "Dec  1 17:02:10 app1 kernel: [ {n}.1234] EXT4-fs (sda1): mounted filesystem with ordered data mode",
    ]
    lines: list[str] = []
    size, n = 0, 0
    target = int(mib * 1024 * 1024)
    while size < target:
        n += 1
        line = rows[n % len(rows)]["text"] if n % 50 == 0 else plain[n % len(plain)].format(n=n)
        lines.append(line)
        size += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def throughput(data: bytes, repeat: int) -> dict[str, float]:
    mib = len(data) / 1048576

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    literal = re.compile(rb"password")
    tokens = re.compile(rb"[A-Za-z0-9+/=_-]{20,}")
    t_literal = best(lambda: sum(1 for _ in literal.finditer(data)))
    t_tokens = best(lambda: sum(1 for _ in tokens.finditer(data)))
    t_redact = best(lambda: Redactor().redact_bytes(data, "bench"))
    return {"mib": mib, "redact": mib / t_redact, "literal": mib / t_literal, "tokens": mib / t_tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=20.0, help="size of the throughput text (MiB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--show", action="store_true", help="print every miss and over-redaction")
    args = parser.parse_args(argv)
    rows = load()
    result = score(rows)
    print(
        f"corpus: {result['secret_lines']} secret lines ({result['secrets']} secrets) "
        f"in {result['formats']} formats, "
        f"{result['harmless']} harmless look-alikes"
    )
    print(
        f"recall:          {result['recall']:.2%}  "
        f"({result['secrets'] - len(result['misses'])}/{result['secrets']};"
        f" goal {RECALL_GOAL:.0%})"
    )
    print(
        f"over-redaction:  {result['over']:.2%}  "
        f"({len(result['overs'])}/{result['harmless']}; goal <= {OVER_GOAL:.0%})"
    )
    if args.show:
        for fmt, text, out in result["misses"]:
            print(f"MISS [{fmt}] {text!r}\n  -> {out!r}")
        for fmt, text, out in result["overs"]:
            print(f"OVER [{fmt}] {text!r}\n  -> {out!r}")
    speed = throughput(evidence(args.mib, rows), args.repeat)
    print(
        f"throughput:      {speed['redact']:.1f} MiB/s on {speed['mib']:.1f} MiB of evidence "
        f"(baselines, same run: one-literal re scan {speed['literal']:.0f} MiB/s, long-token re scan "
        f"{speed['tokens']:.0f} MiB/s; redaction = {speed['redact'] / speed['tokens']:.2f}x the token scan)"
    )
    ok = result["recall"] >= RECALL_GOAL and result["over"] <= OVER_GOAL
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
