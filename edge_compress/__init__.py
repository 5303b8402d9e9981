"""edge-compress: an edge deployment compiler for CNNs.

One installed package, four parts that data flows through in one direction:

    edge_compress.compress          prune to a device budget, recover, report (the CLI and the Python API)
    edge_compress.export            PyTorch -> ONNX, onnx-simplifier, parity (imports nothing of compress)
    edge_compress.deploy            engines, runners, measurement, device bundles (imports nothing of compress)
    edge_compress.device_profiles   the target devices' YAML profiles, typed

    from edge_compress.compress import compress
"""
__version__ = "0.1.0"
