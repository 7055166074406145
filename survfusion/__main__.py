"""``python -m survfusion <command>``: the command line lives in ``survfusion.cli.main``."""

from survfusion.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
