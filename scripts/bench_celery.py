"""Celery drain and latency benchmark (scripts/bench-celery runs it).

As a Celery app module: defines `bench.noop(sent_at)`, which returns how long
after `sent_at` it started. As a script:

    python bench_celery.py BROKER_URL JOBS RATE SECONDS LABEL -- WORKER COMMAND...

sends JOBS messages from Python, starts the worker command, measures the drain
(jobs per second between the first and the last result), then sends RATE
messages a second for SECONDS and reports enqueue-to-start p50/p99, and stops the
worker. Prints one Markdown row."""

import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
)


@app.task(name="bench.noop")
def noop(sent_at):
    return time.time() - sent_at


def wait_all(r, ids, timeout=600):
    """The results of `ids` once all exist: [(start - sent, date_done)]."""
    keys = [f"celery-task-meta-{i}" for i in ids]
    deadline = time.time() + timeout
    while True:
        metas = []
        for k in range(0, len(keys), 1000):
            metas.extend(r.mget(keys[k:k + 1000]))
        if all(m is not None for m in metas):
            out = []
            for m in metas:
                meta = json.loads(m)
                assert meta["status"] == "SUCCESS", meta
                out.append(meta)
            return out
        if time.time() > deadline:
            raise SystemExit(f"only {sum(m is not None for m in metas)} of {len(ids)} done")
        time.sleep(0.05)


def done_at(meta):
    from datetime import datetime
    return datetime.fromisoformat(meta["date_done"]).timestamp()


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))]


def main():
    url, jobs, rate, seconds, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    worker_cmd = sys.argv[sys.argv.index("--") + 1:]
    r = app.backend.client
    r.flushdb()
    ids = [app.send_task("bench.noop", args=[time.time()]).id for _ in range(jobs)]
    worker = subprocess.Popen(worker_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metas = wait_all(r, ids)
        ends = sorted(done_at(m) for m in metas)
        drain = (len(ends) - 1) / max(ends[-1] - ends[0], 1e-9)
        # Latency at a steady rate the worker keeps up with.
        ids = []
        start = time.time()
        n = int(rate * seconds)
        for i in range(n):
            target = start + i / rate
            pause = target - time.time()
            if pause > 0:
                time.sleep(pause)
            ids.append(app.send_task("bench.noop", args=[time.time()]).id)
        lat = [m["result"] * 1000 for m in wait_all(r, ids)]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    print(f"| {label} | {jobs} | {drain:,.0f} | {rate}/s × {seconds:g} s | {pct(lat, 0.5):.1f} ms | {pct(lat, 0.99):.1f} ms |")


if __name__ == "__main__":
    main()
