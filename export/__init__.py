"""Exports of the matting models: `export.onnx` (ONNX, checked in ONNX Runtime) and `export.torchscript`
(TorchScript files that run without this project)."""
