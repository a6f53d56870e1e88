"""Write .env from .env.example with freshly generated secrets, for `make compose-up` on a fresh render.

Usage: python3 deploy/write_env.py .env.example .env

Every secret the compose stack needs gets a random value; the file is created with mode 0600 and an
existing one is never overwritten. Standard library only, so it runs before any environment exists.
Secrets are never printed: read them in .env.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

# The user the generated API key authenticates (auth=api_key).
API_KEY_USER = "operator"


def generated_secrets() -> dict[str, str]:
    """A value for every secret name .env.example may hold; the ones it does not hold are dropped."""
    minio_user, minio_password = f"minio-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    return {
        "THREAD_ID_SECRET": secrets.token_urlsafe(32),
        # Hex: it goes into DATABASE_URL unescaped.
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "GF_SECURITY_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "API_KEYS": json.dumps({secrets.token_urlsafe(32): API_KEY_USER}),
        "JWT_SECRET": secrets.token_urlsafe(48),
        # The app reaches the compose MinIO with its root credentials.
        "MINIO_ROOT_USER": minio_user,
        "MINIO_ROOT_PASSWORD": minio_password,
        "S3_ACCESS_KEY_ID": minio_user,
        "S3_SECRET_ACCESS_KEY": minio_password,
    }


def fill(example: str, values: dict[str, str]) -> str:
    """The example with each named secret set (and uncommented); every other line as it was."""
    lines = []
    for line in example.splitlines():
        name, sep, _ = line.lstrip("# ").partition("=")
        if sep and name in values and " " not in name:
            line = f"{name}={values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(example_path: str, env_path: str) -> int:
    example = Path(example_path).read_text()
    try:
        descriptor = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{env_path} exists; it is left as it is", file=sys.stderr)
        return 0
    with os.fdopen(descriptor, "w") as env:
        env.write(fill(example, generated_secrets()))
    print(f"wrote {env_path} with fresh secrets (never commit it); fill in what stays empty, such as model API keys")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
