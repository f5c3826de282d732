"""Neural text classifiers trained by OpenMaaS and served by the `openmaas-nn` runtime.

Each architecture is an `nn.Module` taking padded token ids and their lengths and returning
logits; training (`openmaas.training.recipes`) and serving (`openmaas.runtimes.textnn`) build
them from the same config, so what a recipe trained is exactly what the server runs.

- `vocab`: a word-level tokenizer trained on the training texts, and batch padding
- `textcnn`, `rnn`, `encoder`: the networks
- `tagger`: the BiLSTM tagger for named entities: (ids, lengths, casing) -> logits per piece
- `saved`: the servable directory (`openmaas.json`, `model.safetensors`, `tokenizer.json`)
"""
