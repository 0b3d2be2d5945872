"""HTTP routers: thin layers that parse, authorize, call app.jobs and shape the response."""
