"""The checks of one record, by the shape of record a dataset holds: single fields
(`fields.py`), chat and prompt/completion (`chat.py`), tokens with tags (`tags.py`). Each
check returns the example or None, and puts what is wrong in the `ReportBuilder` it is given."""
