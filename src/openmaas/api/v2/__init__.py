"""The Open Inference Protocol v2 (KServe / Triton REST), so `tritonclient.http` works:
`routes.py` holds only the routes, `adapter.py` maps any task contract with v2 tensors onto
the protocol, and `tensors.py` is the codec for JSON and Triton's binary tensor extension."""
