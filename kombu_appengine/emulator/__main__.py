"""``python -m kombu_appengine.emulator``: the same as ``pullqueue_emulator``."""

from .cli import main

if __name__ == "__main__":
    main()
