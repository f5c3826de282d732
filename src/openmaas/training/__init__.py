"""Training as a service: recipes that turn a dataset into a servable model version, and the
job system that runs them in worker processes."""
