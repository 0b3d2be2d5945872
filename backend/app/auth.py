"""Mint an admin token for operators: `python -m app.auth token --sub ID --role admin --ttl 8h`."""

import argparse
import re
import sys

from app import security
from app.config import ConfigError, load_settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(value: str) -> int:
    """'90s', '15m', '8h', '2d' or plain seconds, as seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"invalid ttl {value!r}: use e.g. 900, 15m, 8h or 2d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--sub", required=True, help="the caller's id, kept on jobs it starts")
    token.add_argument("--role", default="admin", choices=["admin", "therapist", "patient"])
    token.add_argument("--ttl", type=parse_ttl, default=parse_ttl("8h"))
    args = parser.parse_args(argv)
    try:
        secret = load_settings(require_database=False).require_jwt_secret()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(security.mint(secret=secret, sub=args.sub, role=args.role, ttl_seconds=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
