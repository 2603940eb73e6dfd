"""Write the sidecar's HS256 token key on first start; keep the existing one afterwards.

Run by the `keygen` service of compose.yaml (the agentgov image, as its non-root user) into
the `secrets` volume the sidecar mounts read-only:

    python keygen.py /etc/agentgov/secrets/agent-auth/jwt-key

The key is 64 URL-safe random characters (384 bits; the sidecar requires at least 32 bytes),
created with O_EXCL and mode 0400, and never printed. Anyone who can read it can mint tokens:
`agentgov token create --key-file` with it is how callers get one on this deployment.
"""

from __future__ import annotations

import os
import secrets
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: keygen.py PATH", file=sys.stderr)
        return 2
    path = argv[1]
    if os.path.exists(path):
        print(f"keygen: {path} exists; kept")
        return 0
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:  # another keygen won the race: its key stands
        print(f"keygen: {path} exists; kept")
        return 0
    with os.fdopen(fd, "w", encoding="ascii") as key:
        key.write(secrets.token_urlsafe(48))
    print(f"keygen: wrote a new token key to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
