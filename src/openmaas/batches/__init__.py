"""OpenAI's Batch API: a file of requests run as a job beside online traffic, its answers
written to output and error files."""
