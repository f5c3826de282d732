"""The serving engine: router (references → versions), pool (loaded models under a memory
budget), batcher (per model), response cache; `engine.InferenceEngine` ties them together."""
