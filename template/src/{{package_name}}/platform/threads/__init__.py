"""Threads, in one place: their signed IDs (ids.py), who owns them (registry.py, the service_threads table)
and how long they live (retention.py, the TTL columns of that table and the sweeper)."""
