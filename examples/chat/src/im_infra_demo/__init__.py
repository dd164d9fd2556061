"""GoChat's message pipeline on im-infra: the end-to-end demo.

A gateway accepts chat messages, gives each a Snowflake id (uid, worker id from coord) and
publishes it with mq to ``gochat.messages.upstream`` carrying the request's trace id; a logic
worker registered in coord consumes it, stores it with db (deduplicated by message id) and keeps
each conversation's last 50 messages in cache. Every log line is clog JSON, and one trace id
follows a message end to end.
"""
