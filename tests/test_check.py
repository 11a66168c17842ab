"""`pipeline check` against the throwaway Dovecot: all ok, and a clear FAIL line with a non-zero exit otherwise."""

from __future__ import annotations

import re


def lines_of(result) -> list[str]:
    return result.stdout.splitlines()


def test_check_passes(ops_dovecot_config, ops_cli, dovecot, mail_user) -> None:
    config = ops_dovecot_config()
    result = ops_cli(config, "check")
    assert result.exit_code == 0, result.output
    lines = lines_of(result)
    assert lines[0] == f"ok   config: {config}"
    assert re.fullmatch(
        rf"ok   database: sqlite:///{re.escape(str(config.parent))}/pipeline\.db at revision \w+", lines[1]
    )
    assert lines[2] == "ok   trust: strict mode; no Amazon mail stored yet to check"
    assert lines[3] == f"ok   imap login: {mail_user.username} on {dovecot.host}:{dovecot.port} (plain)"
    assert lines[4] == "ok   capabilities: IDLE UIDPLUS SPECIAL-USE"
    assert re.fullmatch(r"ok   folder INBOX: UIDVALIDITY \d+", lines[5])
    assert lines[6] == "ok   drafts folder: Drafts"
    assert len(lines) == 7


def test_check_passes_over_tls(ops_dovecot_config, ops_cli, dovecot, mail_user) -> None:
    for security, port in (("ssl", dovecot.ssl_port), ("starttls", dovecot.port)):
        config = ops_dovecot_config(security=security, port=port, ca_file=str(dovecot.ca_file))
        result = ops_cli(config, "check")
        assert result.exit_code == 0, result.output
        assert f"ok   imap login: {mail_user.username} on {dovecot.host}:{port} ({security})" in lines_of(result)


def test_check_fails_on_an_untrusted_certificate(ops_dovecot_config, ops_cli, dovecot) -> None:
    result = ops_cli(ops_dovecot_config(security="ssl", port=dovecot.ssl_port), "check")
    assert result.exit_code == 1
    assert lines_of(result)[-1].startswith(
        f"FAIL imap login: TLS certificate of {dovecot.host}:{dovecot.ssl_port} not trusted: "
    )


def test_check_fails_on_a_wrong_password(ops_dovecot_config, ops_cli, monkeypatch, mail_user, dovecot) -> None:
    config = ops_dovecot_config()
    monkeypatch.setenv("PIPELINE_IMAP_PASSWORD", "not-" + mail_user.password)
    result = ops_cli(config, "check")
    assert result.exit_code == 1
    assert lines_of(result)[-1] == (
        f"FAIL imap login: {dovecot.host}: login refused for {mail_user.username} (check the password or token)"
    )
    assert lines_of(result)[:2][0].startswith("ok   config")
    assert mail_user.password not in result.output
    assert "Traceback" not in result.output


def test_check_fails_on_a_missing_password(ops_dovecot_config, ops_cli, monkeypatch) -> None:
    config = ops_dovecot_config()
    monkeypatch.delenv("PIPELINE_IMAP_PASSWORD")
    result = ops_cli(config, "check")
    assert result.exit_code == 1
    assert lines_of(result)[-1] == (
        "FAIL imap login: environment variable PIPELINE_IMAP_PASSWORD (imap.password_env) is not set"
    )


def test_check_fails_on_a_missing_drafts_folder(ops_dovecot_config, ops_cli, dovecot) -> None:
    result = ops_cli(ops_dovecot_config(drafts="Nope"), "check")
    assert result.exit_code == 1
    lines = lines_of(result)
    assert lines[-1] == f"FAIL drafts folder: folder 'Nope' does not exist on {dovecot.host}"
    assert [line.split()[0] for line in lines] == ["ok"] * 6 + ["FAIL"]


def test_check_fails_on_a_missing_watched_folder(ops_dovecot_config, ops_cli, dovecot) -> None:
    result = ops_cli(ops_dovecot_config(folders=["INBOX", "Amazon"]), "check")
    assert result.exit_code == 1
    assert f"FAIL folder Amazon: folder 'Amazon' does not exist on {dovecot.host}" in lines_of(result)
    assert "ok   drafts folder: Drafts" in lines_of(result)


def test_check_fails_on_an_unreachable_server(ops_config, ops_cli) -> None:
    result = ops_cli(ops_config(imap={"host": "127.0.0.1", "port": 1, "security": "plain"}), "check")
    assert result.exit_code == 1
    assert lines_of(result)[-1].startswith("FAIL imap login: cannot connect to 127.0.0.1:1: ")


def test_check_fails_on_an_unusable_database(ops_dovecot_config, ops_cli, tmp_path) -> None:
    config = ops_dovecot_config()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    config.write_text(
        config.read_text().replace(f"sqlite:///{tmp_path / 'pipeline.db'}", f"sqlite:///{blocker}/pipeline.db")
    )
    result = ops_cli(config, "check")
    assert result.exit_code == 1
    database = [line for line in lines_of(result) if "database" in line]
    assert len(database) == 1
    assert database[0].startswith("FAIL database: ")
    assert "ok   drafts folder: Drafts" in lines_of(result)  # the other checks still ran


def test_check_fails_on_an_unreachable_database_server(ops_dovecot_config, ops_cli, tmp_path) -> None:
    config = ops_dovecot_config()
    config.write_text(
        config.read_text().replace(
            f"sqlite:///{tmp_path / 'pipeline.db'}", "postgresql+psycopg://pipeline:hunter2@127.0.0.1:1/claims"
        )
    )
    result = ops_cli(config, "check")
    assert result.exit_code == 1
    database = [line for line in lines_of(result) if "database" in line]
    assert database[0].startswith(
        "FAIL database: cannot open database postgresql+psycopg://pipeline:***@127.0.0.1:1/claims: "
    )
    assert "hunter2" not in result.output
