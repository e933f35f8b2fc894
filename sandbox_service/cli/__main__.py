"""`python -m sandbox_service.cli` is `sbx`."""

from ._main import main

main()
