"""Word vectors trained by OpenMaaS (the `word2vec` recipe) and served as text embeddings by
the `word2vec` runtime: a text's embedding is the mean of its words' vectors.

Training and serving share these modules, so a text is cut into the same words and the
vectors are read exactly as they were written:

- `tokenizer`: the word tokenizer (lowercase letters-and-digits words)
- `saved`: the servable directory (`openmaas.json`, `vectors.safetensors`, `vocabulary.json`)
"""
