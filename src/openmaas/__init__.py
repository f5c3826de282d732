"""OpenMaaS: a self-hosted Model-as-a-Service platform for language models.

The Python SDK is the public entry point::

    from openmaas import Client

    with Client("http://127.0.0.1:8000") as client:
        for model in client.list_models():
            print(model.name, model.latest_version)
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from openmaas.client import APIError, Client

__all__ = ["APIError", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK is imported lazily so `import openmaas` stays cheap for the server and the CLI.
    if name in ("Client", "APIError"):
        from openmaas import client

        return getattr(client, name)
    raise AttributeError(name)
