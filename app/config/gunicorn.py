"""gunicorn configuration for the `web` role; every value from the environment.

Read by gunicorn's master before any Django import, so it stays free of Django.
"""

import glob
import multiprocessing
import os

_host = os.environ.get("BIND_HOST", "127.0.0.1")
_port = os.environ.get("WEB_PORT") or os.environ.get("PORT", "8000")
bind = [f"{_host}:{_port}"]
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = int(os.environ.get("GUNICORN_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "200"))
# Only the proxy in front may set X-Forwarded-* (nginx on the same host or pod network).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = None  # nginx logs requests; the app logs what matters as JSON
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
if os.environ.get("LOG_FORMAT", "text") == "json":
    # gunicorn's own lines (master, worker boots and deaths) as JSON, like the app's.
    logconfig_dict = {
        "formatters": {"json": {"()": "config.logs.JsonFormatter"}},
        "filters": {"context": {"()": "config.logs.ContextFilter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None
proc_name = "chat-web"
# gunicorn ≥ 25 opens a control socket (resize, reload, stop) at one path under $HOME:
# instances on a host would take it from each other, and a read-only container has no
# such home. Opt in with a path.
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not _control_socket
if _control_socket:
    control_socket = _control_socket


def on_starting(server):
    # Multiprocess metrics: files left by a previous run would be summed into this one.
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, "*.db")):
            os.remove(stale)


def child_exit(server, worker):
    # Multiprocess metrics: forget the live gauges of a worker that is gone.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
