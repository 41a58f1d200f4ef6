"""The Python side of larder's Celery interop tests: a Celery 5 app on the
broker and result backend the tests give (CELERY_BROKER_URL,
CELERY_RESULT_BACKEND), JSON only, and a small command line for the tests to
drive it: `python interop.py COMMAND ...`, printing one JSON line."""

import json
import os
import sys
import time

from celery import Celery

app = Celery(
    "interop",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ.get("CELERY_RESULT_BACKEND", os.environ["CELERY_BROKER_URL"]),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_track_started=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
    },
    broker_connection_retry_on_startup=True,
)


# Tasks Python workers run.
@app.task(name="py.add")
def py_add(a, b):
    return a + b


@app.task(name="py.fail")
def py_fail(message):
    raise ValueError(message)


@app.task(name="py.slow")
def py_slow(seconds, tag):
    time.sleep(seconds)
    return {"tag": tag, "by": "py"}


@app.task(name="shared.work")
def shared_work(n):
    return {"n": n, "by": "py"}


# Tasks larder workers run: declared here so that `.delay` and `.apply_async`
# can be called on them, as an app that moved them to Rust still does.
@app.task(name="rust.add")
def rust_add(a, b):
    raise NotImplementedError("runs in larder")


@app.task(name="rust.count")
def rust_count():
    raise NotImplementedError("runs in larder")


def result_of(r, timeout):
    """The outcome of AsyncResult `r` as the tests read it."""
    try:
        value = r.get(timeout=timeout, propagate=False)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"state": r.state, "wait_error": type(e).__name__}
    out = {"state": r.state}
    if isinstance(value, BaseException):
        out["error_type"] = type(value).__name__
        out["error"] = [str(a) for a in value.args]
    else:
        out["result"] = value
    return out


def main(argv):
    cmd = argv[0]
    if cmd == "send":
        # send NAME ARGS_JSON KWARGS_JSON OPTIONS_JSON
        name, args, kwargs, options = argv[1], json.loads(argv[2]), json.loads(argv[3]), json.loads(argv[4])
        how = options.pop("how", "send_task")
        if "eta_in" in options:
            from datetime import datetime, timedelta, timezone
            options["eta"] = datetime.now(timezone.utc) + timedelta(seconds=options.pop("eta_in"))
        if "expires_in" in options:
            from datetime import datetime, timedelta, timezone
            options["expires"] = datetime.now(timezone.utc) + timedelta(seconds=options.pop("expires_in"))
        if how == "delay":
            r = app.tasks[name].delay(*args, **kwargs)
        elif how == "apply_async":
            r = app.tasks[name].apply_async(args=args, kwargs=kwargs, **options)
        else:
            r = app.send_task(name, args=args, kwargs=kwargs, **options)
        print(json.dumps({"id": r.id}))
    elif cmd == "get":
        print(json.dumps(result_of(app.AsyncResult(argv[1]), float(argv[2]))))
    elif cmd == "state":
        print(json.dumps({"state": app.AsyncResult(argv[1]).state}))
    elif cmd == "revoke":
        app.control.revoke(argv[1])
        print(json.dumps({"revoked": argv[1]}))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
