"""Start or stop a throwaway local Dovecot IMAP server for development, demos and benchmarks.

python scripts/dovecot.py start --dir DIR [--ssl]   # prints `export` lines; eval "$(...)" to use them
python scripts/dovecot.py stop --dir DIR
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

try:
    from pipeline.testing.dovecot import DovecotError, ThrowawayDovecot
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline.testing.dovecot import DovecotError, ThrowawayDovecot


def start(directory: Path, *, ssl: bool) -> int:
    """Start a server in `directory`, add one user and print shell `export` lines describing it."""
    server = ThrowawayDovecot(directory, ssl=ssl)
    server.start()  # DovecotError naming scripts/setup.sh when Dovecot is not installed
    try:
        user = server.add_user()
    except BaseException:
        server.stop()
        raise
    password_file = server.workdir / "password"
    password_file.touch(mode=0o600)
    password_file.chmod(0o600)
    password_file.write_text(user.password + "\n")
    exports = {
        "PIPELINE_TEST_IMAP_HOST": server.host,
        "PIPELINE_TEST_IMAP_PORT": str(server.port),
        "PIPELINE_TEST_IMAP_USER": user.username,
        "PIPELINE_TEST_IMAP_PASSWORD_FILE": str(password_file),
    }
    if server.ssl_port is not None and server.ca_file is not None:
        exports["PIPELINE_TEST_IMAP_SSL_PORT"] = str(server.ssl_port)
        exports["PIPELINE_TEST_IMAP_CA_FILE"] = str(server.ca_file)
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    print(
        f"# Dovecot is running (log: {server.log_path}); stop it with: "
        f"python {shlex.quote(sys.argv[0])} stop --dir {shlex.quote(str(server.workdir))}",
        file=sys.stderr,
    )
    return 0


def stop(directory: Path) -> int:
    """Stop the server started earlier in `directory` (the directory itself is kept)."""
    server = ThrowawayDovecot.attach(directory)
    server.stop()
    print(f"# Dovecot in {server.workdir} stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start a server in DIR and print export lines")
    start_parser.add_argument("--dir", required=True, type=Path, help="work directory (created if missing)")
    start_parser.add_argument("--ssl", action="store_true", help="also serve IMAPS and STARTTLS (self-signed CA)")
    stop_parser = commands.add_parser("stop", help="stop the server running in DIR")
    stop_parser.add_argument("--dir", required=True, type=Path, help="work directory given to start")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            return start(args.dir, ssl=args.ssl)
        return stop(args.dir)
    except DovecotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
