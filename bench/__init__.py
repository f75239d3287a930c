"""Benchmarks (not tests): they start real processes on loopback and print figures. See README `## Performance`."""
