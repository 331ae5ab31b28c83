"""The long-running inspection service on the edge box: supervision, health, metrics, commands, deploy files.

Entry point: ``inspector-edge`` / ``python -m edge`` (``edge.service:main``; several cameras: edge/stations.py).

The workers, joined by bounded queues (edge/queues.py)::

    CaptureWorker ──frames──▶ InferenceWorker ──verdicts──▶ PublishWorker ──▶ sinks
    (edge/capture.py)         (edge/inference.py)           (edge/publish.py)

``EdgeService`` (edge/supervisor.py) starts and watches them; its status and health reporting
live in edge/status.py, the commands it executes in edge/station_commands.py, its settings in
edge/options.py, its HTTP servers in edge/servers.py and its scrape-time collectors in
edge/collectors.py.
"""
