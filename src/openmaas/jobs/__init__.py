"""The job system, generic over kinds: a persisted queue, worker processes, heartbeats,
retries, cancel, checkpoints through the artifact store, and publishing a job's result as a
new model version with lineage. A kind (training today) supplies `prepare` and `run`."""
