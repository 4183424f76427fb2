"""The `asr` program (`asr ...` or `python -m asr ...`): under tcmalloc where installed, then the CLI."""
import sys

from .allocator import reexec_under_tcmalloc


def main() -> int:
    reexec_under_tcmalloc()  # before torch is imported: the process starts again under the new allocator
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
