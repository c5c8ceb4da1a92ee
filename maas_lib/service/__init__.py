"""The HTTPS front end (docs/service.md): the ASGI app (`app.create_app`), `maasctl serve`
(`server`), and the web page (`web`). Every endpoint authenticates, calls one
`maas_lib.access.GuardedFleet` method and serializes its result; no rule lives here.
Nothing is imported here: each module loads only when a command needs it."""
