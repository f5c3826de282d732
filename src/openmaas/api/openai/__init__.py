"""The OpenAI dialect, so the stock `openai` client works unchanged: `/v1/embeddings`,
`/v1/chat/completions` and `/v1/completions`, `/v1/moderations`, `/v1/audio/transcriptions`,
`/v1/models`, `/v1/files` and `/v1/fine_tuning/jobs`. One module of thin routes per resource;
`fine_tuning_adapter.py` maps OpenAI's fine-tuning request onto a training job."""
