"""``python -m specclass`` behaves like the ``specclass`` script."""

from specclass.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
