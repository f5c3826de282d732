"""Print the secrets a deployment needs, as an env file (compose's --env-file):

    python deploy/make_env.py > deploy/.env

The same values go into the Helm chart's Secret (docs/deploy.md). Keep them: a new
encryption key cannot read what the old one wrote, a new pepper invalidates every API key.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import base64
import secrets
import string


def admin_key() -> str:
    # The API key format: "om-" + 8 lowercase letters or digits + "_" + the secret.
    prefix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    return f"om-{prefix}_{secrets.token_urlsafe(32)}"


def main() -> None:
    values = {
        "OPENMAAS_ADMIN_KEY": admin_key(),
        "OPENMAAS_KEY_PEPPER": secrets.token_urlsafe(32),
        "OPENMAAS_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
    }
    for name, value in values.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
