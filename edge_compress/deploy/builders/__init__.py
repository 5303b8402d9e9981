"""Builders: what turns an ONNX file into what a runner loads (ORT engine, INT8 model, TensorRT engine)."""
