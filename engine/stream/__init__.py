"""`nba consume`: the engine as a member of a Redis Streams consumer group.

``consumer`` (the loop: group, reads, claims, dead letters, outputs, acknowledgements),
``batch`` (a batch's decisions, read with one pipeline per Redis node and committed once
per input entry), ``commits`` (a round's commits streamed to their nodes while it is still
deciding), ``metrics`` (stats and Prometheus), ``command`` (the CLI options).
"""
