"""The cost model: per-layer latency and memory prediction (model.py), and fitting its factors to
measurements here (variants.py, measure.py) or to published latencies (published.py); host.py checks
a measured target's fit against the CPU at hand; commands.py holds the two CLI commands."""
