"""Mint an admin token for operators: `python -m app.auth token --sub ID --role admin --ttl 8h`.

The token goes to stdout alone, so `TOKEN=$(python -m app.auth token ...)` captures just it;
its expiry goes to stderr. The subject is recorded on every job and audit entry the token
starts, so it must name someone; a TTL over 24 h needs --allow-long-ttl. With AUTH_MODE=oidc it
refuses: tokens then come from the identity provider.
"""

import argparse
import re
import sys
from datetime import UTC, datetime

import jwt

from app import security
from app.config import ConfigError, load_settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_SECONDS = 24 * 3600


def parse_ttl(value: str) -> int:
    """'90s', '15m', '8h', '2d' or plain seconds, as seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"invalid ttl {value!r}: use e.g. 900, 15m, 8h or 2d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _duration(seconds: int) -> str:
    """Seconds in --ttl's own notation, largest whole unit first: 2d, 8h, 90m, 45s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--sub", required=True, help="the caller's id, kept on jobs it starts")
    token.add_argument("--role", default="admin", choices=["admin", "therapist", "patient"])
    token.add_argument(
        "--ttl", type=parse_ttl, default=parse_ttl("8h"), help="e.g. 15m, 8h (default), 24h"
    )
    token.add_argument(
        "--allow-long-ttl", action="store_true", help="allow a --ttl over 24 h (think twice)"
    )
    args = parser.parse_args(argv)
    subject = args.sub.strip()
    if not subject:
        print('--sub is empty: give who the token is for, e.g. --sub "$(whoami)"', file=sys.stderr)
        return 2
    if args.ttl > MAX_TTL_SECONDS and not args.allow_long_ttl:
        print(
            f"--ttl {_duration(args.ttl)} is over the 24 h cap: "
            "mint a shorter one, or add --allow-long-ttl",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_settings(require_database=False)
        if settings.auth_mode == "oidc":
            print(
                "AUTH_MODE=oidc: admin tokens come from the identity provider, not from here\n"
                "Sign in there and use its access token (it must carry "
                f"{settings.oidc_admin_role!r} in its {settings.oidc_roles_claim} claim)",
                file=sys.stderr,
            )
            return 2
        secret = settings.require_jwt_secret()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    minted = security.mint(
        secret=secret,
        sub=subject,
        role=args.role,
        ttl_seconds=args.ttl,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    print(minted)
    exp = jwt.decode(minted, options={"verify_signature": False})["exp"]
    expires = datetime.fromtimestamp(exp, UTC)
    print(
        f"token for {subject} ({args.role}) expires {expires:%Y-%m-%d %H:%M:%S} UTC "
        f"(in {_duration(args.ttl)})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
