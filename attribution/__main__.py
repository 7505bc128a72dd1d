"""``python -m attribution`` runs the ``attribute-teacher`` CLI."""

from .cli import main

if __name__ == "__main__":
    main()
