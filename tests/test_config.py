"""Configuration: every bad config is one line naming the file, the key and what was expected, exit code 2."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from pipeline.config import load_settings, settings_from_dict
from pipeline.errors import ConfigError, SecretError

VALID = """\
[imap]
host = "imap.example.com"
username = "claims@example.com"
password_env = "PIPELINE_IMAP_PASSWORD"

[seller]
store_name = "Acme Store"
from_address = "claims@example.com"
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(ops_cli, path: Path, command: str = "claims") -> str:
    """Run a command on a bad config; return its one error line after checking exit code 2 and no traceback."""
    result = ops_cli(path, command)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- bad configs through the CLI: exact messages ----------------------------------------------------------


def test_unknown_key(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace('host = "imap.example.com"', 'host = "imap.example.com"\nmailbox = "x"'))
    assert config_error(ops_cli, path) == (
        f"Error: {path}: unknown key [imap] mailbox (expected one of: host, username, port, security, "
        "password_env, password_file, password_command, oauth2_token_command, ca_file, inbox, folders, drafts, "
        "sent, timeout, poll_interval, idle_renew, batch_size)"
    )


def test_misspelt_key_gets_a_suggestion(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace("password_env", "pasword_env"))
    assert config_error(ops_cli, path) == f"Error: {path}: unknown key [imap] pasword_env (did you mean password_env?)"


def test_wrong_type(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace('host = "imap.example.com"', 'host = "imap.example.com"\nport = "993"'))
    assert config_error(ops_cli, path) == f"Error: {path}: [imap] port: expected an integer, got string '993'"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("response_days = 7.5", "[seller] response_days: expected an integer, got number 7.5"),
        ("response_days = true", "[seller] response_days: expected an integer, got boolean true"),
        ('recognized_carriers = "UPS"', "[seller] recognized_carriers: expected a list of strings, got string 'UPS'"),
        ("recognized_carriers = [1, 2]", "[seller] recognized_carriers: expected a list of strings, got a list"),
        ("response_days = 0", "[seller] response_days: expected at least 1, got 0"),
        ('from_address = "nobody"', "[seller] from_address: expected an email address, got 'nobody'"),
    ],
)
def test_wrong_values_in_seller(tmp_path, ops_cli, line: str, message: str) -> None:
    text = VALID.replace('from_address = "claims@example.com"', "") + line + "\n"
    if "from_address" not in line:
        text += 'from_address = "claims@example.com"\n'
    path = write(tmp_path, text)
    assert config_error(ops_cli, path) == f"Error: {path}: {message}"


def test_missing_required_key(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace('username = "claims@example.com"\n', ""))
    assert config_error(ops_cli, path) == f"Error: {path}: missing key [imap] username (expected a string)"


def test_missing_required_section(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.split("[seller]")[0])
    assert config_error(ops_cli, path) == f"Error: {path}: missing section [seller]"


def test_unknown_section(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID + "\n[mailbox]\nhost = 'x'\n")
    assert config_error(ops_cli, path) == (
        f"Error: {path}: unknown section [mailbox] "
        "(expected one of: imap, database, seller, drafts, models, trust, processing, log)"
    )


def test_section_that_is_not_a_table(tmp_path, ops_cli) -> None:
    path = write(tmp_path, 'log = "debug"\n' + VALID)
    assert config_error(ops_cli, path) == f"Error: {path}: [log] must be a table, got string 'debug'"


def test_missing_file(tmp_path, ops_cli) -> None:
    path = tmp_path / "nowhere.toml"
    assert config_error(ops_cli, path) == (
        f"Error: {path}: config file not found (write a sample with `pipeline init`)"
    )


def test_invalid_toml(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID + "[log\nlevel = 'INFO'\n")
    assert config_error(ops_cli, path) == (
        f"Error: {path}: not valid TOML: Expected ']' at the end of a table declaration (at line 9, column 5)"
    )


def test_not_utf8(tmp_path, ops_cli) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_bytes(VALID.encode() + b"# caf\xe9\n")
    assert config_error(ops_cli, path) == f"Error: {path}: config file is not UTF-8 text"


def test_plain_imap_refused_to_a_remote_host(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace("username =", 'security = "plain"\nusername ='))
    assert config_error(ops_cli, path) == (
        f'Error: {path}: [imap] security: "plain" sends the password unencrypted and is only allowed to a '
        'loopback host, not \'imap.example.com\'; use "ssl" or "starttls"'
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1"])
def test_plain_imap_allowed_to_loopback(tmp_path, host: str) -> None:
    text = VALID.replace('"imap.example.com"', f'"{host}"').replace("username =", 'security = "plain"\nusername =')
    settings = load_settings(write(tmp_path, text))
    assert settings.imap.security == "plain"
    assert settings.imap.effective_port == 143


def test_unknown_security_mode(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace("username =", 'security = "tls"\nusername ='))
    assert config_error(ops_cli, path) == (
        f"Error: {path}: [imap] security: expected one of ssl, starttls, plain, got 'tls'"
    )


def test_two_password_sources(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace("password_env =", 'password_command = "pass show imap"\npassword_env ='))
    assert config_error(ops_cli, path) == f"Error: {path}: [imap] give only one of password_env, password_command"


def test_no_password_source(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace('password_env = "PIPELINE_IMAP_PASSWORD"\n', ""))
    assert config_error(ops_cli, path) == (
        f"Error: {path}: [imap] needs one of password_env, password_file, password_command or oauth2_token_command"
    )


def test_bad_log_level(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID + '\n[log]\nlevel = "LOUD"\n')
    assert config_error(ops_cli, path) == (
        f"Error: {path}: [log] level: expected one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"
    )


def test_check_reports_a_bad_config_as_a_fail_line(tmp_path, ops_cli) -> None:
    path = write(tmp_path, VALID.replace('username = "claims@example.com"\n', ""))
    result = ops_cli(path, "check")
    assert result.exit_code == 2
    assert result.output == f"FAIL config: {path}: missing key [imap] username (expected a string)\n"


def test_config_path_from_environment(tmp_path, ops_cli, monkeypatch) -> None:
    path = write(tmp_path, VALID.replace("[seller]", "[seler]"), name="elsewhere.toml")
    monkeypatch.setenv("PIPELINE_CONFIG", str(path))
    result = ops_cli(None, "claims")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {path}: unknown section [seler] (did you mean seller?)")


# --- init ------------------------------------------------------------------------------------------------


def test_init_writes_a_sample_that_loads(tmp_path, ops_cli) -> None:
    path = tmp_path / "pipeline.toml"
    result = ops_cli(path, "init")
    assert result.exit_code == 0
    assert result.output == f"wrote {path}; edit [imap] and [seller], then run `pipeline check`\n"
    settings = load_settings(path)
    assert settings.imap.host == "imap.example.com"
    assert settings.imap.password_env == "PIPELINE_IMAP_PASSWORD"
    assert settings.database.url == f"sqlite:///{tmp_path / 'pipeline.db'}"
    assert settings.seller.response_days == 7
    assert "# " in path.read_text()  # commented


def test_init_refuses_to_overwrite(tmp_path, ops_cli) -> None:
    path = write(tmp_path, "# my own config\n")
    result = ops_cli(path, "init")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: already exists; not overwriting it\n"
    assert path.read_text() == "# my own config\n"


def test_init_with_path_option(tmp_path, ops_cli) -> None:
    target = tmp_path / "etc" / "custom.toml"
    target.parent.mkdir()
    result = ops_cli(tmp_path / "unused.toml", "init", "--path", str(target))
    assert result.exit_code == 0
    assert load_settings(target).seller.store_name == "Acme Store"
    assert not (tmp_path / "unused.toml").exists()


# --- paths and secrets -------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch, ops_cli) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "secret").write_text("s3cret\n")
    path = write(
        folder,
        VALID.replace('password_env = "PIPELINE_IMAP_PASSWORD"', 'password_file = "secret"')
        + '\n[database]\nurl = "sqlite:///data/claims.db"\n[drafts]\ntemplates_dir = "tpl"\n',
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(path)
    assert settings.database.url == f"sqlite:///{folder}/data/claims.db"
    assert settings.imap.password_file == str(folder / "secret")
    assert settings.drafts.templates_dir == str(folder / "tpl")
    assert settings.imap.secret() == "s3cret"
    result = ops_cli(path, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert (folder / "data" / "claims.db").is_file()
    assert not (elsewhere / "data").exists()


def test_absolute_and_server_urls_are_kept(tmp_path) -> None:
    for url in (f"sqlite:///{tmp_path}/x.db", "postgresql+psycopg://pipeline@db.example/claims", "sqlite://"):
        raw = {
            "imap": {"host": "h", "username": "u", "password_env": "X"},
            "seller": {"store_name": "S", "from_address": "a@b.example"},
            "database": {"url": url},
        }
        assert settings_from_dict(raw, tmp_path / "p.toml").database.url == url


def test_secret_is_never_in_repr(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PIPELINE_IMAP_PASSWORD", "hunter2-env-secret")
    (tmp_path / "pw").write_text("hunter2-file-secret")
    for text in (VALID, VALID.replace('password_env = "PIPELINE_IMAP_PASSWORD"', 'password_file = "pw"')):
        settings = load_settings(write(tmp_path, text))
        secret = settings.imap.secret()
        assert secret.startswith("hunter2")
        assert secret not in repr(settings)
        assert secret not in str(settings)
        assert secret not in repr(settings.imap)


def test_password_env_not_set(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PIPELINE_IMAP_PASSWORD", raising=False)
    settings = load_settings(write(tmp_path, VALID))
    with pytest.raises(
        SecretError,
        match=r"^environment variable PIPELINE_IMAP_PASSWORD \(imap.password_env\) "
        r"is not set$",
    ):
        settings.imap.secret()


def test_password_file_missing_or_empty(tmp_path) -> None:
    settings = load_settings(
        write(tmp_path, VALID.replace('password_env = "PIPELINE_IMAP_PASSWORD"', 'password_file = "pw"'))
    )
    pw = tmp_path / "pw"
    with pytest.raises(SecretError) as caught:
        settings.imap.secret()
    assert str(caught.value) == f"cannot read imap.password_file {pw}: No such file or directory"
    pw.write_text("\n")
    with pytest.raises(SecretError) as caught:
        settings.imap.secret()
    assert str(caught.value) == f"imap.password_file {pw} is empty"


def command_config(tmp_path: Path, script: str) -> Path:
    (tmp_path / "helper.py").write_text(script)
    command = f"{sys.executable} {tmp_path / 'helper.py'}"
    return write(tmp_path, VALID.replace('password_env = "PIPELINE_IMAP_PASSWORD"', f'password_command = "{command}"'))


def test_password_command(tmp_path) -> None:
    settings = load_settings(command_config(tmp_path, "print('from-the-command')\n"))
    assert settings.imap.secret() == "from-the-command"


def test_failing_password_command_output_is_not_echoed(tmp_path, caplog) -> None:
    script = "import sys\nprint('hunter2-stdout')\nprint('hunter2-stderr', file=sys.stderr)\nsys.exit(3)\n"
    settings = load_settings(command_config(tmp_path, script))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SecretError) as caught:
        settings.imap.secret()
    assert str(caught.value) == "imap.password_command exited with status 3"
    assert "hunter2" not in caplog.text


def test_failing_password_command_through_the_cli(tmp_path, ops_cli, dovecot, mail_user) -> None:
    script = "import sys\nprint('hunter2-stdout')\nprint('hunter2-stderr', file=sys.stderr)\nsys.exit(3)\n"
    path = command_config(tmp_path, script)
    text = path.read_text().replace(
        'host = "imap.example.com"', f'host = "{dovecot.host}"\nport = {dovecot.port}\nsecurity = "plain"'
    )
    path.write_text(text)
    result = ops_cli(path, "--log-level", "DEBUG", "poll", "--once")
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert result.stderr.splitlines()[-1] == "Error: imap.password_command exited with status 3"
    assert "Traceback" not in result.output


def test_no_secret_in_environment_of_children(tmp_path) -> None:
    """The password stays where it was put: reading it does not export it anywhere."""
    before = dict(os.environ)
    settings = load_settings(command_config(tmp_path, "print('child-secret')\n"))
    assert settings.imap.secret() == "child-secret"
    assert dict(os.environ) == before


def test_config_error_is_exit_code_2() -> None:
    assert ConfigError.exit_code == 2
    assert SecretError.exit_code == 2


@pytest.mark.parametrize("value", [0, 20000])
def test_batch_size_out_of_range(tmp_path, ops_cli, value: int) -> None:
    path = write(tmp_path, VALID.replace("username =", f"batch_size = {value}\nusername ="))
    assert config_error(ops_cli, path) == f"Error: {path}: [imap] batch_size: expected 1 to 10000, got {value}"
