"""Each pod's own "127.0.0.1".

In a pod, 127.0.0.1 and `localhost` are the pod's private loopback; locally every pod
shares the host's, so two TorchServe replicas both binding their management API to
127.0.0.1:8081 would clash. Each pod therefore also gets a private loopback alias (another
127.x.y.z), and `127.0.0.1`/`localhost`, as whole host tokens, are replaced by it in
command, args, env values and the text files of its ConfigMap/Secret volumes. The alias is
still loopback (checks such as "management must listen on loopback" hold) and, like a
pod's loopback, nothing else is told about it. Addresses computed in code are not seen.
"""

from __future__ import annotations

import re

_LOOPBACK_HOST = re.compile(r"(?<![\w.-])(?:127\.0\.0\.1|localhost)(?![\w-]|\.\w)")


def rewrite_loopback(text: str, alias: str) -> str:
    """`text` with the host tokens 127.0.0.1 and localhost replaced by `alias`."""
    if not alias or alias == "127.0.0.1":
        return text
    return _LOOPBACK_HOST.sub(alias, text)
