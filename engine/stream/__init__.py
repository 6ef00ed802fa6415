"""`nba consume`: the engine as a member of a Redis Streams consumer group.

``consumer`` (the loop: group, reads, claims, dead letters, outputs, acknowledgements),
``batch`` (a batch's decisions, read and committed with one pipeline per Redis node, each
once per input entry), ``metrics`` (stats and Prometheus), ``command`` (the CLI options).
"""
