"""``python -m producers``: run the three producers until SIGTERM; exit 1 if any of them dies."""

import asyncio
import logging
import os
import sys

from .runtime import amain, parse_config


def main() -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(amain(parse_config()))


if __name__ == "__main__":
    sys.exit(main())
