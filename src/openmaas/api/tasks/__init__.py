"""Our own task routes for what OpenAI's API lacks (classify, ner, translate, summarize,
rerank), in `routes.py`; the task contracts themselves are `openmaas.tasks`."""
