"""Training datasets: uploaded files read, validated, described and split.

A file (JSONL, CSV, TSV, CoNLL or plain text lines) is stored as uploaded; its format and
schema are recognised from the first rows, every row is checked (`validate`), the valid rows become
plain examples (`{"text", "label"}`, `{"tokens", "tags"}` or `{"text"}`), described by
`stats`, hashed for lineage and split deterministically (`split`). `DatasetService` ties
this to the metadata store and the artifact store.
"""
