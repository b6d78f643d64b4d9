"""Benchmarks: throughput and latency of qun's flows as ratios to the machine's own gRPC limit."""
