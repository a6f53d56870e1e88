"""Benchmarks of the service, beside tests/ and outside the package (the image does not ship them); run them
with `make bench`, `make bench-load`, `make bench-peer` and `make bench-growth` (docs/performance.md), and
`make soak` (docs/operations.md)."""
