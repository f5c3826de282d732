"""Wire schemas: the JSON bodies the API speaks and the SDK reads, one module per resource area.

Everything here is pydantic and the standard library; nothing imports the server (no FastAPI,
no SQLAlchemy, no services), so the SDK and any other client can use these models as they are.
Converters from server entities to these models live in the API layer (`openmaas.api.convert`).

Example::

    from openmaas.protocol.registry import PathSource, RegisterRequest

    body = RegisterRequest(source=PathSource(path="/models/minilm"), alias="staging")
"""
