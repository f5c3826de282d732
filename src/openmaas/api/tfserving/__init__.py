"""TensorFlow Serving / KServe v1 REST: `:predict` and the model status routes."""
