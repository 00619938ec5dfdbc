"""`tts serve`: an OpenAI-compatible HTTP server whose "models" are test-time-scaling strategies.

A request's `model` names a strategy and its options (`self-consistency:n=8`); the server runs that
search on one shared backend (so concurrent requests meet in the engine's batches) and answers with the
chosen candidate as a normal chat completion, counting every token the search spent (docs/serve.md).

`create_app(backend, task, settings=...)` builds the FastAPI app (tests pass a scripted backend);
`tts serve` (tts/serve/cli.py) builds the backend from the same flags as `tts eval` and runs uvicorn.
"""

from tts.serve.app import create_app
from tts.serve.schema import ServeSettings, parse_model

__all__ = ["ServeSettings", "create_app", "parse_model"]
