"""The REST front of the Task Queue API (v1beta2), shared by the emulator and the gateway.

One front, two backends: :mod:`.front` parses requests, routes them by API
method id, checks parameters, authenticates and authorizes; :mod:`.batch`
answers the batch endpoint; :mod:`.errors` renders Google's error bodies;
:mod:`.faults` injects failures (retry tests); :mod:`.wsgi` hosts the front
in any WSGI server; the dashboard at ``/`` (:mod:`kombu_appengine.dashboard`)
is served through it too. The queues behind it implement
:class:`~.backend.TaskQueueBackend`: the emulator's model
(:mod:`kombu_appengine.emulator`) or App Engine's task queue service
(:mod:`kombu_appengine.gateway`).
"""
