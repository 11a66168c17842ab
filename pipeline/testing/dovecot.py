"""A throwaway local Dovecot IMAP server (optionally with TLS) for the tests, `pipeline demo` and scripts/dovecot.py.

Everything lives in one work directory: config, passwd-files, maildirs, sockets, log and certificates.
Dovecot itself is installed by scripts/setup.sh; this module only finds and runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl as ssl_module
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from pipeline.errors import PipelineError

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

_CONFIG_NAME = "dovecot.conf"
_STATE_NAME = "dovecot.json"
_PASSWD_DIR = "passwd.d"
_LOG_NAME = "dovecot.log"
_STDERR_NAME = "dovecot.stderr"
# Unix socket paths are limited to 107 bytes; the longest socket dovecot creates under base_dir is
# about 30 characters, so a longer base_dir goes to a short private temp dir instead.
_MAX_BASE_DIR_LEN = 70
# Where Debian puts dovecot/doveadm; a non-root PATH often lacks them.
_SBIN_PATH = "/usr/sbin:/usr/local/sbin"
_NOT_INSTALLED = "Dovecot is not installed: run scripts/setup.sh (it installs dovecot-imapd with apt-get)"
# Dovecot's default auth_username_chars.
_USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


# The config of a ThrowawayDovecot (str.format fields). The anvil-auth-penalty socket is moved off the path the
# auth process looks for: that switches off the per-IP auth penalty, which would otherwise delay every login from
# 127.0.0.1 by up to 15 s after a test's deliberate failed logins.
_CONFIG = """# Throwaway Dovecot written by pipeline.testing.dovecot; everything lives in {workdir}
base_dir = {base_dir}
state_dir = {state_dir}
instance_name = pipeline-dovecot-{port}
log_path = {log_path}
listen = {host}
protocols = imap
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:~/Maildir
{ssl_settings}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = {passwd_dir}/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}

protocol imap {{
  mail_max_userip_connections = 100
}}

service imap-login {{
{no_chroot}  inet_listener imap {{
    port = {port}
  }}
{imaps}}}
service anvil {{
{no_chroot}  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}
"""


class DovecotError(PipelineError):
    """Dovecot could not be found, started, stopped or driven (the message says why; `pipeline demo` prints it)."""


@dataclass(frozen=True)
class MailUser:
    """Login credentials of one mailbox on a ThrowawayDovecot."""

    username: str
    password: str


def _find_binary(name: str) -> str | None:
    """Path of a Dovecot binary on PATH or in the sbin directories, or None."""
    return shutil.which(name) or shutil.which(name, path=_SBIN_PATH)


def find_dovecot() -> str:
    """Path of the `dovecot` binary, after checking that `doveadm` is there too.

    Raises DovecotError (one line naming scripts/setup.sh) when Dovecot is not installed.
    """
    dovecot = _find_binary("dovecot")
    if dovecot is None or _find_binary("doveadm") is None:
        raise DovecotError(_NOT_INSTALLED)
    return dovecot


def _free_port() -> int:
    """Ask the kernel for a currently free TCP port on the loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (zombies of our own children count as gone)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_openssl(*args: str) -> None:
    """Run the openssl CLI, raising DovecotError with its stderr on failure."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DovecotError("the `openssl` command is needed to make the TLS certificate but was not found")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DovecotError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Create a throwaway CA and a server certificate for 127.0.0.1/localhost signed by it, with `openssl`.

    Returns (ca_file, server_cert_file, server_key_file).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    _run_openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca_file), "-days", "30", "-subj", "/CN=pipeline test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    _run_openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost",
    )  # fmt: skip
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _run_openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_file), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "30", "-sha256", "-extfile", str(ext),
    )  # fmt: skip
    for path in (ca_key, key):
        path.chmod(0o600)
    return ca_file, cert, key


class ThrowawayDovecot:
    """A private Dovecot instance on free loopback ports, living in its own work directory.

    Use as a context manager (`with ThrowawayDovecot(ssl=True) as server: user = server.add_user()`)
    or call start()/stop(). Attributes: host, port (plain IMAP, STARTTLS too when ssl=True),
    ssl_port (implicit TLS, or None), ca_file (CA that signed the server certificate, or None), workdir.
    """

    def __init__(self, workdir: Path | None = None, *, ssl: bool = False) -> None:
        """Prepare (but do not start) a server in `workdir`, or in a fresh temp dir when it is None."""
        self.ssl = ssl
        self.host = HOST
        self.port: int | None = None
        self.ssl_port: int | None = None
        self.ca_file: Path | None = None
        self._given_workdir = Path(workdir).resolve() if workdir is not None else None
        self.workdir: Path = self._given_workdir or Path()
        self._owns_workdir = False
        self._base_dir: Path | None = None
        self._owns_base_dir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._users: set[str] = set()
        self._cert_file: Path | None = None
        self._key_file: Path | None = None

    # ------------------------------------------------------------------ paths

    @property
    def config_path(self) -> Path:
        """The dovecot.conf this instance runs with."""
        return self.workdir / _CONFIG_NAME

    @property
    def log_path(self) -> Path:
        """Dovecot's log file."""
        return self.workdir / _LOG_NAME

    @property
    def passwd_dir(self) -> Path:
        """Directory of passwd-files (one per user, named after it) used as passdb and userdb."""
        return self.workdir / _PASSWD_DIR

    @property
    def running(self) -> bool:
        """True while the master process is alive."""
        return self._pid is not None and _pid_alive(self._pid)

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and clean up."""
        self.stop()

    def start(self) -> None:
        """Write the config, start Dovecot and wait (10 s at most) until it greets on the IMAP port."""
        if self.running:
            raise DovecotError("this ThrowawayDovecot is already running")
        dovecot = find_dovecot()
        if self._given_workdir is not None:
            other = _running_master_pid(self._given_workdir)
            if other is not None:
                raise DovecotError(
                    f"a Dovecot (pid {other}) is already running in {self._given_workdir}: stop it first"
                )
        self._prepare_workdir()
        try:
            self._check_reachable()
            last_error: DovecotError | None = None
            for _attempt in range(3):  # a free port can be taken between choosing it and binding it
                self.port = _free_port()
                self.ssl_port = _free_port() if self.ssl else None
                while self.ssl_port == self.port:
                    self.ssl_port = _free_port()
                self._write_config()
                try:
                    self._launch(dovecot)
                    self._wait_ready()
                except DovecotError as error:
                    self._kill()
                    last_error = error
                    if "Address already in use" in str(error):
                        continue
                    raise
                self._write_state()
                return
            assert last_error is not None
            raise last_error
        except BaseException:
            self._cleanup_dirs()
            raise

    def stop(self) -> None:
        """Stop the server and all its children, then remove the temp dirs this object created."""
        self._kill()
        self._cleanup_dirs()

    @classmethod
    def attach(cls, workdir: Path) -> ThrowawayDovecot:
        """Return a handle on a server started earlier in `workdir` (e.g. by scripts/dovecot.py start).

        stop() on the handle stops that server but leaves the directory in place.
        """
        workdir = Path(workdir).resolve()
        try:
            state = json.loads((workdir / _STATE_NAME).read_text())
        except (OSError, ValueError) as error:
            raise DovecotError(f"no throwaway Dovecot state in {workdir}: {error}") from error
        server = cls(workdir, ssl=bool(state.get("ssl_port")))
        server.port = state["port"]
        server.ssl_port = state.get("ssl_port")
        server.ca_file = Path(state["ca_file"]) if state.get("ca_file") else None
        server._base_dir = Path(state["base_dir"])
        server._owns_base_dir = bool(state.get("private_base_dir"))
        server._pid = state.get("pid")
        with contextlib.suppress(OSError):
            pid_file = server._base_dir / "master.pid"
            server._pid = int(pid_file.read_text().split()[0])
        return server

    # ---------------------------------------------------------------- users

    def add_user(self, username: str | None = None, password: str | None = None) -> MailUser:
        """Add a mailbox user (random `user-<hex>` name and random password by default) and check it logs in.

        The user's mailbox is fresh and empty; Drafts, Sent and Trash are created on first login.
        """
        if not self.running:
            raise DovecotError("start() the server before adding users")
        if username is None:
            username = f"user-{secrets.token_hex(6)}"
            while username in self._users:
                username = f"user-{secrets.token_hex(6)}"
        if password is None:
            password = secrets.token_urlsafe(18)
        if not username or not set(username) <= _USERNAME_CHARS:
            raise DovecotError(f"unsupported username {username!r} (use letters, digits and ._@-)")
        if any(ch in password for ch in ":\r\n\0") or not password:
            raise DovecotError("the password must be non-empty and contain no ':' or line breaks")
        if username in self._users or username in self._passwd_users():
            raise DovecotError(f"user {username!r} already exists")
        home = self.workdir / "home" / username
        home.mkdir(mode=0o700)
        uid, gid = self._mail_ids()
        if os.geteuid() == 0:
            os.chown(home, uid, gid)
        # One passwd-file per user: Dovecot stats a passwd-file at most once per second, so a line
        # appended to a shared file can stay unseen for up to a second; a file it has never seen is read
        # at once. Write-then-rename so the auth process never reads half a file.
        line = f"{username}:{{PLAIN}}{password}:{uid}:{gid}::{home}::\n"
        path = self.passwd_dir / username
        tmp = self.passwd_dir / f".{username}.tmp"
        tmp.write_text(line)
        self._secure(tmp, 0o640)
        os.replace(tmp, path)
        self._users.add(username)
        user = MailUser(username, password)
        self._verify_login(user)
        return user

    def _verify_login(self, user: MailUser, timeout: float = 5.0) -> None:
        """Log in once (which also auto-creates the special-use folders); retry briefly, then raise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with IMAPClient(self.host, port=self.port, ssl=False, timeout=10) as client:
                    client.login(user.username, user.password)
                    client.list_folders()
                    client.logout()
                return
            except LoginError as error:
                if time.monotonic() >= deadline:
                    raise DovecotError(
                        f"new user {user.username!r} cannot log in: {error}\n{self._log_tail()}"
                    ) from error
                time.sleep(0.1)

    # -------------------------------------------------------------- doveadm

    def doveadm(self, *args: str) -> str:
        """Run `doveadm -c CONFIG ARGS...` against this server and return its stdout."""
        result = self._run_doveadm(args)
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def _run_doveadm(self, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        doveadm = _find_binary("doveadm")
        if doveadm is None:
            raise DovecotError(_NOT_INSTALLED)
        return subprocess.run(
            [doveadm, "-c", str(self.config_path), *args], capture_output=True, text=True, check=False
        )

    def kick(self, username: str) -> bool:
        """Disconnect all of the user's IMAP sessions (`doveadm kick`); False when none was connected."""
        result = self._run_doveadm(("kick", username))
        if result.returncode == 0:
            return True
        if "no users kicked" in (result.stdout + result.stderr):  # doveadm exits 68 (EX_NOUSER)
            return False
        raise DovecotError(
            f"doveadm kick {username} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}"
        )

    def set_uidvalidity(self, username: str, mailbox: str, value: int) -> None:
        """Change a mailbox's UIDVALIDITY (`doveadm mailbox update --uid-validity`)."""
        self.doveadm("mailbox", "update", "-u", username, "--uid-validity", str(value), mailbox)

    def log_text(self) -> str:
        """Everything Dovecot has logged so far (plus anything it wrote to stderr before logging started)."""
        parts = []
        for path in (self.workdir / _STDERR_NAME, self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------- internals

    def _log_tail(self, lines: int = 30) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "Dovecot log (tail):\n" + ("\n".join(tail) if tail else "(empty)")

    def _prepare_workdir(self) -> None:
        if self._given_workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="dovecot-"))
            self._owns_workdir = True
        else:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        # Login processes (dovenull) and mail processes (dovecot) must traverse it; nobody may list it.
        self.workdir.chmod(0o711)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        home.chmod(0o711)
        (self.workdir / "state").mkdir(exist_ok=True)
        base_dir = self.workdir / "run"
        if len(str(base_dir)) > _MAX_BASE_DIR_LEN:
            self._base_dir = Path(tempfile.mkdtemp(prefix="dovecot-run-"))
            self._owns_base_dir = True
        else:
            self._base_dir = base_dir
            self._owns_base_dir = False
        self.passwd_dir.mkdir(exist_ok=True)
        self._secure(self.passwd_dir, 0o750)
        self._users = set(self._passwd_users())
        if self.ssl:
            self.ca_file, self._cert_file, self._key_file = make_certificates(self.workdir / "tls")
        else:
            self.ca_file = None

    def _check_reachable(self) -> None:
        """As root, the mail and auth processes run as `dovecot`: it must be able to enter the work dir."""
        if os.geteuid() != 0:
            return
        uid, gid = self._mail_ids()
        for directory in [self.workdir, *self.workdir.parents]:
            st = directory.stat()
            if st.st_uid == uid:
                allowed = st.st_mode & stat.S_IXUSR
            elif st.st_gid == gid:
                allowed = st.st_mode & stat.S_IXGRP
            else:
                allowed = st.st_mode & stat.S_IXOTH
            if not allowed:
                raise DovecotError(
                    f"the dovecot user cannot enter {directory} (mode {stat.S_IMODE(st.st_mode):04o}), "
                    f"so it cannot reach the work dir {self.workdir}: choose a work dir outside it"
                )

    def _passwd_users(self) -> list[str]:
        try:
            return [path.name for path in self.passwd_dir.iterdir() if not path.name.startswith(".")]
        except FileNotFoundError:
            return []

    def _secure(self, path: Path, mode: int) -> None:
        """Owner (and, as root, the dovecot group the auth process runs in) only: passwords live here."""
        if os.geteuid() == 0:
            _, gid = self._mail_ids()
            os.chown(path, 0, gid)
            path.chmod(mode)
        else:
            path.chmod(mode & 0o700)

    def _service_users(self) -> tuple[str, str]:
        """(login user, internal user) names."""
        if os.geteuid() == 0:
            return "dovenull", "dovecot"
        import pwd

        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me

    def _mail_ids(self) -> tuple[int, int]:
        import pwd

        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("dovecot")
            except KeyError as error:
                raise DovecotError("the system user `dovecot` does not exist (is dovecot-core installed?)") from error
            return entry.pw_uid, entry.pw_gid
        return os.geteuid(), os.getegid()

    def _write_config(self) -> None:
        assert self._base_dir is not None and self.port is not None
        login_user, internal_user = self._service_users()
        uid, gid = self._mail_ids()
        root = os.geteuid() == 0
        if self.ssl:
            ssl_settings = f"ssl = yes\nssl_cert = <{self._cert_file}\nssl_key = <{self._key_file}\n"
            imaps = f"  inet_listener imaps {{\n    port = {self.ssl_port}\n    ssl = yes\n  }}\n"
        else:
            ssl_settings = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        config = _CONFIG.format(
            workdir=self.workdir,
            base_dir=self._base_dir,
            state_dir=self.workdir / "state",
            port=self.port,
            log_path=self.log_path,
            host=HOST,
            login_user=login_user,
            internal_user=internal_user,
            internal_group=internal_user if root else _group_name(gid),
            uid=uid,
            gid=gid,
            ssl_settings=ssl_settings,
            passwd_dir=self.passwd_dir,
            imaps=imaps,
            # Without root, Dovecot cannot chroot its login and anvil processes.
            no_chroot="" if root else "  chroot =\n",
        )
        self.config_path.write_text(config)

    def _launch(self, dovecot: str) -> None:
        assert self._base_dir is not None
        stderr_path = self.workdir / _STDERR_NAME
        with open(stderr_path, "wb") as stderr:
            # -F keeps the master in the foreground: we own its pid, and its own session/process
            # group holds all its children, so stop() can signal the whole group.
            self._proc = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
            )
        self._pid = self._proc.pid

    def _wait_ready(self) -> None:
        assert self.port is not None
        deadline = time.monotonic() + START_TIMEOUT
        last_problem = "no connection attempt yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._proc.returncode} while starting\n{self._log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    sock.settimeout(2)
                    greeting = sock.makefile("rb").readline()
                if greeting.startswith(b"* OK"):
                    if self.ssl_port is not None:
                        self._check_tls_port()
                    return
                last_problem = f"unexpected greeting {greeting!r}"
            except (OSError, ssl_module.SSLError) as error:
                last_problem = str(error)
            time.sleep(0.05)
        raise DovecotError(
            f"dovecot did not greet on {self.host}:{self.port} within {START_TIMEOUT:.0f} s "
            f"({last_problem})\n{self._log_tail()}"
        )

    def _check_tls_port(self) -> None:
        assert self.ssl_port is not None and self.ca_file is not None
        context = ssl_module.create_default_context(cafile=str(self.ca_file))
        with (
            socket.create_connection((self.host, self.ssl_port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname=self.host) as tls,
        ):
            tls.settimeout(2)
            greeting = tls.makefile("rb").readline()
        if not greeting.startswith(b"* OK"):
            raise OSError(f"unexpected IMAPS greeting {greeting!r}")

    def _write_state(self) -> None:
        state = {
            "pid": self._pid,
            "host": self.host,
            "port": self.port,
            "ssl_port": self.ssl_port,
            "ca_file": str(self.ca_file) if self.ca_file else None,
            "base_dir": str(self._base_dir),
            "private_base_dir": self._owns_base_dir,
        }
        (self.workdir / _STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")

    def _kill(self) -> None:
        """SIGTERM the master (it stops its children), then SIGKILL whatever is left of its process group."""
        pid = self._pid
        if pid is None:
            return
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        # The master leads its own process group (start_new_session); sweep up any stragglers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=STOP_TIMEOUT)
            self._proc = None
        self._pid = None
        with contextlib.suppress(OSError):
            (self.workdir / _STATE_NAME).unlink()

    def _cleanup_dirs(self) -> None:
        if self._owns_base_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._owns_base_dir = False
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._owns_workdir = False


def _running_master_pid(workdir: Path) -> int | None:
    """Pid of a live Dovecot master started earlier in `workdir`, if any."""
    base_dirs = [workdir / "run"]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        base_dirs.insert(0, Path(json.loads((workdir / _STATE_NAME).read_text())["base_dir"]))
    for base_dir in base_dirs:
        try:
            pid = int((base_dir / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _pid_alive(pid):
            return pid
    return None


def _group_name(gid: int) -> str:
    """Name of a group id (Dovecot settings want names for default_internal_group)."""
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
