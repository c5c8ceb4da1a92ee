"""`maasctl serve`: the HTTPS API (`maas_lib.service`). Its options only; the app, uvicorn
and pydantic load when the command runs, never for `maasctl --help`."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--listen",
    required=True,
    metavar="HOST:PORT",
    help="Address to listen on; ':8443' listens on 127.0.0.1 only, name an address to bind "
    "wider (0.0.0.0:8443, [::]:8443); port 0 takes any free port (the URL is printed).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    metavar="PEM",
    help="The server's certificate (chain); its key too unless --tls-key. Required unless "
    "--insecure-http.",
)
@click.option("--tls-key", type=click.Path(dir_okay=False), metavar="PEM", help="Its key.")
@click.option(
    "--client-ca",
    type=click.Path(dir_okay=False),
    metavar="PEM",
    help="Require a client certificate signed by this CA on every connection (mutual TLS), "
    "in addition to the bearer token.",
)
@click.option(
    "--insecure-http",
    is_flag=True,
    help="Serve plain HTTP instead of HTTPS: only on a loopback address (a local proxy "
    "terminating TLS, a demo).",
)
@click.option("--jwt-issuer", metavar="URL", help="Accept OIDC JWTs from this issuer (iss).")
@click.option("--jwt-audience", metavar="AUD", help="The audience (aud) those JWTs must name.")
@click.option(
    "--jwks", metavar="FILE|URL", help="The issuer's signing keys (a JWKS file or https URL)."
)
@click.option(
    "--jwt-role-claim", metavar="CLAIM", help="The claim holding the role [default: maas_role]."
)
@click.option(
    "--jwt-teams-claim", metavar="CLAIM", help="The claim holding the teams [default: groups]."
)
@click.option(
    "--rate-limit",
    type=float,
    metavar="N",
    help="Calls a second per principal (burst 2N), and failed sign-ins a second per client "
    "address; per process [default: 20].",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    metavar="N",
    help="Server processes sharing the listening socket (1 to twice the cores); rate "
    "limits and stream caps count per process.",
)
@click.pass_obj
def serve(
    c: object,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    client_ca: str | None,
    insecure_http: bool,
    jwt_issuer: str | None,
    jwt_audience: str | None,
    jwks: str | None,
    jwt_role_claim: str | None,
    jwt_teams_claim: str | None,
    rate_limit: float | None,
    workers: int,
) -> None:
    """Serve the HTTPS API (docs/service.md) over the database (--db / $MAAS_DB) until
    SIGTERM; calls in flight finish first. Several processes may serve one PostgreSQL."""
    # The app (FastAPI, uvicorn, pydantic): only this command.
    from maas_lib.service.run import run

    run(
        db=getattr(c, "db", None),
        listen=listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_ca=client_ca,
        insecure_http=insecure_http,
        jwt={
            "issuer": jwt_issuer,
            "audience": jwt_audience,
            "jwks": jwks,
            "role_claim": jwt_role_claim,
            "teams_claim": jwt_teams_claim,
        },
        rate_limit=rate_limit,
        workers=workers,
        on_ready=lambda url: click.echo(f"serving {url}/api/v1", err=True),
    )
