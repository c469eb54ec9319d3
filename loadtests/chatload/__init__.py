"""Locust building blocks for the chat: a protocol client that reports every frame to
Locust, delivery tracking (latency, gaps, reconciliation), user roles and scenarios.

Only websocket-client, gevent and Locust are needed, so the folder runs as it is from
`make loadtest`, the compose `loadtest` profile and the Kubernetes Locust Job.
"""
