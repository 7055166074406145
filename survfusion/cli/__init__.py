"""Stage 7, cli: ``python -m survfusion <command>``; argument handling only."""
