"""The worker side of a node: task queues, the pull protocol, calls back from components."""
