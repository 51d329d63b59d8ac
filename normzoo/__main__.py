"""``python -m normzoo ...``: the same as the ``normzoo`` console script."""

from normzoo.cli import main

if __name__ == "__main__":
    main()
