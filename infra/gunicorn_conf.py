"""gunicorn settings file for the API (``--config infra/gunicorn_conf.py``, passed by
``infra/run.py api_command``): hooks only; the command line holds the settings.

``post_worker_init`` runs in each worker once the app is loaded: one socket write per small
response (``infra/gunicorn_response.py`` for gunicorn's own HTTP handling, the gevent and
gthread workers; ``infra/gunicorn_pywsgi.py`` for gevent_pywsgi, which also gives
WebSockets gunicorn's socket and close, and applies gunicorn's request limits, refusals and
keep-alive deadline) and garbage-collector settings for a server.

``worker_exit`` runs in each worker after it stopped serving, while gevent's hub is still
running, and closes the app's pool, producer and listener there. Without it the pool is
only collected at interpreter shutdown, where its ``__del__`` cannot join its threads
(greenlets by then) and every worker exit prints "greenlet is being finalized".

gunicorn reads this file in the master, before it forks and before the gevent worker
monkey-patches the standard library, so it imports nothing of the app at module level.
"""

from __future__ import annotations

from typing import Any

# gunicorn >= 25.1 opens a control socket at one fixed path per user ($HOME/.gunicorn); every
# API process on the machine (make run, tests, benchmarks) would contend for it, and nothing
# here uses it. Older gunicorns ignore an unknown setting in this file.
control_socket_disable = True


def worker_exit(server: Any, worker: Any) -> None:
    # Imported here, in the worker, after gevent patched the standard library.
    from flask import Flask

    from api import close_app

    app = getattr(worker, "wsgi", None)  # absent when the app failed to load
    if isinstance(app, Flask):
        close_app(app)


def post_worker_init(worker: Any) -> None:
    if getattr(worker, "wsgi_handler", None) is not None:
        # gevent_pywsgi: gevent's HTTP server answers, not gunicorn's Response.
        from infra import gunicorn_pywsgi

        gunicorn_pywsgi.install(worker)
    else:
        from infra import gunicorn_response

        gunicorn_response.install()
    tune_gc()


def tune_gc() -> None:
    """Garbage-collector settings for a server whose app is loaded (gunicorn ignores this
    name; bench/ingest_ab.py calls it to measure the same setting in-process).

    The app's long-lived objects (Flask, botocore's service models, pydantic schemas) move
    to the permanent generation, so no collection traverses them again, and young
    collections run every 10,000 container allocations instead of 700 (a request allocates
    thousands). Measured by ``bench/ingest_ab.py --in-process`` (README, Benchmarks)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)
