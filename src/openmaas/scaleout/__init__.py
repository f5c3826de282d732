"""Scale-out on a Ray cluster (OPENMAAS_RAY_ADDRESS): the only package that imports Ray.

Training jobs with `resources` run data-parallel on Ray Train (`train_job` drives them from the
job's worker process, `train_worker` runs on each Ray Train worker); search jobs run their
trials on Ray Tune (`tune_search`). See docs/scaling-training.md.
"""
