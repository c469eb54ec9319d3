"""Scenario knobs as Locust command-line options, each also read from a LOCUST_* variable.

Locust passes custom options from the master to its workers, so a distributed run needs
them only on the master (except LOCUST_SCENARIO, read when the locustfile is imported,
and LOCUST_TOKENS, a file every worker reads).
"""

from __future__ import annotations

from typing import Any

from locust import events
from locust.env import Environment

SCENARIOS = ("fanout", "rooms", "pm", "mixed", "churn")


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    def opt(name: str, env: str, **kwargs: Any) -> None:
        parser.add_argument(name, env_var=env, include_in_web_ui=True, **kwargs)

    opt(
        "--scenario",
        "LOCUST_SCENARIO",
        default="fanout",
        choices=SCENARIOS,
        help="fanout | rooms | pm | mixed | churn (chosen when the locustfile is imported)",
    )
    opt("--tokens", "LOCUST_TOKENS", default="", help="file of 'username token' lines")
    opt(
        "--ws-hosts",
        "LOCUST_WS_HOSTS",
        default="",
        help="comma-separated base URLs of single ws replicas (pm spreads users over them)",
    )
    opt("--room", "LOCUST_ROOM", default="lt-fanout", help="the fanout room")
    opt("--senders", "LOCUST_SENDERS", type=int, default=4, help="fanout: sending users")
    opt("--rate", "LOCUST_RATE", type=float, default=10.0, help="fanout: messages/s in total")
    opt(
        "--user-rate",
        "LOCUST_USER_RATE",
        type=float,
        default=0.2,
        help="rooms, pm, mixed, churn: actions/s per user",
    )
    opt("--room-size", "LOCUST_ROOM_SIZE", type=int, default=10, help="users per room")
    opt(
        "--message-bytes",
        "LOCUST_MESSAGE_BYTES",
        type=int,
        default=64,
        help="length of each chat message",
    )
    opt(
        "--settle",
        "LOCUST_SETTLE",
        type=float,
        default=5.0,
        help="fanout: seconds after spawning completes before sending starts",
    )
    opt(
        "--drain",
        "LOCUST_DRAIN",
        type=float,
        default=4.0,
        help="seconds between the last send and the reconciliation",
    )
    opt(
        "--reconcile-time",
        "LOCUST_RECONCILE_TIME",
        type=float,
        default=8.0,
        help="seconds kept at the end of the run for the resume reconciliation",
    )
    opt(
        "--delivery-timeout",
        "LOCUST_DELIVERY_TIMEOUT",
        type=float,
        default=10.0,
        help="a delivery later than this (s) is a failure; never arriving: missed",
    )
    opt(
        "--lifetime",
        "LOCUST_LIFETIME",
        default="5-20",
        help="churn: seconds a connection stays, 'min-max'",
    )
    opt(
        "--end-after",
        "LOCUST_END_AFTER",
        type=float,
        default=0.0,
        help="seconds from the start at which the run ends (default: --run-time)",
    )
    opt(
        "--min-delivery-ratio",
        "LOCUST_MIN_DELIVERY_RATIO",
        type=float,
        default=1.0,
        help="criterion: delivered / expected, room and private messages",
    )
    opt(
        "--max-p99",
        "LOCUST_MAX_P99",
        type=float,
        default=250.0,
        help="criterion: fan-out and private-message p99 latency, ms",
    )
    opt(
        "--max-error-ratio",
        "LOCUST_MAX_ERROR_RATIO",
        type=float,
        default=0.0,
        help="criterion: failed / all other requests (connects, pages, error frames)",
    )
    opt("--results", "LOCUST_RESULTS", default="", help="folder for criteria.json")
    opt(
        "--selftest-drop",
        "LOCUST_SELFTEST_DROP",
        type=float,
        default=0.0,
        help="self-test of the checks: ignore this share of received room messages",
    )


@events.init.add_listener
def _end_from_run_time(environment: Environment, **_: Any) -> None:
    """Workers never see --run-time; a custom option carries it to them with the spawn."""
    options = environment.parsed_options
    if options is not None and not options.end_after and getattr(options, "run_time", None):
        options.end_after = float(options.run_time)


def get(environment: Environment) -> Any:
    """The parsed options (a Namespace); Locust always builds one before users start."""
    assert environment.parsed_options is not None, "chat options are parsed at start-up"
    return environment.parsed_options
