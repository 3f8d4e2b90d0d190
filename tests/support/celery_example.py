"""tasks.py: a Celery app on App Engine pull queues."""

from celery import Celery

import kombu_appengine  # noqa: F401 - registers the appengine:// broker URL scheme

app = Celery("tasks", broker="appengine://my-app", backend="rpc://")
app.conf.update(
    broker_transport_options={
        "shared_queue": "shared",  # a pull queue; holds Celery's reply queues
        "lease_secs": 60,
    },
    task_routes={"tasks.resize": {"queue": "images"}},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
)


@app.task
def add(x, y):
    return x + y


@app.task
def resize(path):
    return f"resized {path}"
