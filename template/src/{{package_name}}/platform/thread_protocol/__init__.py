"""The thread protocol (langgraph-sdk 0.4's `threads.stream`, the Agent Server's v2 event streaming): commands
on a thread (commands.py), the thread's runs followed in order (follower.py), and their events in the
protocol's shapes (events.py, messages.py). Runs are the run service's own: admitted, executed and logged as
every run is."""
