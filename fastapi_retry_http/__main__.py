"""`python -m fastapi_retry_http`: the operator CLI (`check`, `probe`)."""

from ._cli import main

raise SystemExit(main())
