"""The benchmark's floor: the Django Channels tutorial's chat, plus one database write.

Reproduced only to be measured (loadtests/bench), never served: a synchronous
WebsocketConsumer whose `receive` stores the message (one INSERT) and sends it to the
room group once, and whose `chat_message` handler serializes JSON for every recipient,
all on the consumers' single sync thread per process, on channels_redis's core layer
with the tutorial's default configuration. Differences from the tutorial, each in its
favour: PostgreSQL with persistent connections instead of SQLite, DEBUG off.
"""
