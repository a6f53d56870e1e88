"""Infrastructure every subsystem stands on: the database pool, migrations, leases, logs, metrics, tracing,
encoding and the chat model. Nothing here imports a subsystem (runs, threads, checkpointing, crons...)."""
