"""Scale-out on a Ray cluster (OPENMAAS_RAY_ADDRESS): the only package that imports Ray.
Nothing imports it unless a Ray address is set; embedded mode never loads Ray.

Serving: each loaded version is a Ray Serve deployment whose replicas run the engine
(`serve_replica`), called by the API process (`serve_engine`, `serve_deployments`); see
docs/scaling.md. Training jobs with `resources` run data-parallel on Ray Train (`train_job`
drives them from the job's worker process, `train_worker` runs on each Ray Train worker);
search jobs run their trials on Ray Tune (`tune_search`); see docs/scaling-training.md.
"""
