"""One client of the chat's WebSocket protocol for every caller: the stack tests, the
benchmark and the Locust load tests.

- protocol.py: the protocol without I/O (frames, the Session state machine, reconnect
  hints and backoff, resume paging); imports nothing beyond the standard library, so
  the Locust image (websocket-client and gevent only) can use it;
- aio.py: the asyncio transport on `websockets`, and ChatClient.

Importable as `chatclient` (loadtests/ on sys.path: the bench, Locust) and as
`loadtests.chatclient` (the repository root on sys.path: the tests).
"""
