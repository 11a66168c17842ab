"""`pip install .` (not editable) gives a working `pipeline` that finds its bundled templates and models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project installed from a built wheel (not editable); returns its bin folder.

    The dependencies are not installed again: a .pth line puts the test venv's site-packages after the new
    venv's own, so `import pipeline` finds the wheel's copy and everything else comes from the test venv.
    The .pth holds a plain path, so the editable install's hooks in that folder are not run.
    """
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-input",
            "--quiet",
            str(CHECKOUT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin"


def run_in(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIPELINE_CONFIG")}
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False)


def test_installed_command_runs(installed: Path, tmp_path: Path) -> None:
    result = run_in(installed, str(installed / "pipeline"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: pipeline [OPTIONS] COMMAND [ARGS]...")
    assert "A-to-z claim desk" in result.stdout
    version = run_in(installed, str(installed / "pipeline"), "--version", cwd=tmp_path)
    assert version.stdout.startswith("pipeline, version ")


def test_installed_package_finds_its_data_inside_site_packages(installed: Path, tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import json, sysconfig
        import pipeline
        from pipeline.resources import bundled_dir, find_file
        from pipeline.drafts import DraftRenderer
        templates, models = bundled_dir("templates"), bundled_dir("models")
        print(json.dumps({
            "package": pipeline.__file__,
            "site": sysconfig.get_paths()["purelib"],
            "templates": str(templates),
            "models": str(models),
            "template": str(find_file("templates", "en/request_withdrawal.txt.j2")),
            "model": str(find_file("models", "en/claims.jsonl")),
            "template_text": (templates / "en" / "request_withdrawal.txt.j2").read_text(encoding="utf-8"),
            "model_lines": sum(1 for line in (models / "en" / "claims.jsonl").open(encoding="utf-8") if line.strip()),
            "languages": sorted(p.name for p in templates.iterdir() if p.is_dir()),
            "renderer": type(DraftRenderer()).__name__,
        }))
    """)
    result = run_in(installed, str(installed / "python"), "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    site = Path(found["site"])
    for key in ("package", "templates", "models", "template", "model"):
        path = Path(found[key])
        assert path.is_relative_to(site), f"{key} {path} is not inside the installed package"
        assert not path.is_relative_to(CHECKOUT)
    assert Path(found["template"]) == Path(found["templates"]) / "en" / "request_withdrawal.txt.j2"
    assert found["template_text"] == (CHECKOUT / "templates/en/request_withdrawal.txt.j2").read_text(encoding="utf-8")
    assert found["model_lines"] > 10
    assert {"en", "de", "fr", "it", "es"} <= set(found["languages"])


def test_installed_package_understands_mail_and_migrates(installed: Path, tmp_path: Path) -> None:
    """The rule models load from the wheel, and the migrations ship with it (`db upgrade` on a new database)."""
    (tmp_path / "pipeline.toml").write_text(
        '[imap]\nhost = "imap.invalid"\nusername = "u"\npassword_env = "UNUSED"\n'
        '[seller]\nstore_name = "S"\nfrom_address = "claims@example.com"\n'
    )
    upgrade = run_in(installed, str(installed / "pipeline"), "db", "upgrade", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith(f"database sqlite:///{tmp_path / 'pipeline.db'}: applied ")
    (tmp_path / "claim.eml").write_bytes(
        b"From: atoz-guarantee-no-reply@amazon.com\r\nTo: claims@example.com\r\n"
        b"Subject: Claim received on order 111-2233445-5566778\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        b"Message-ID: <p1@amazon.com>\r\n\r\nA buyer has filed an A-to-z Guarantee claim on order "
        b"111-2233445-5566778.\r\nClaim reason: Item not received\r\nPlease respond within 7 days.\r\n"
    )
    script = textwrap.dedent("""
        import sys
        from pipeline.message import parse_message
        from pipeline.understanding.understander import Understander
        facts = Understander().understand(parse_message(open(sys.argv[1], "rb").read()))
        print(facts.kind, facts.order_id, facts.complaint_type)
    """)
    result = run_in(installed, str(installed / "python"), "-c", script, str(tmp_path / "claim.eml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["claim_filed", "111-2233445-5566778", "not_received"]


# --- the systemd unit -------------------------------------------------------------------------------------

UNIT = CHECKOUT / "scripts" / "pipeline.service"


def unit_sections() -> dict[str, dict[str, list[str]]]:
    """The unit file as {section: {key: [values]}} (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{raw!r} is outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_is_hardened() -> None:
    service = unit_sections()["Service"]
    expected = {
        "User": "pipeline",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "pipeline",
        "WorkingDirectory": "/var/lib/pipeline",
        "Environment": "PIPELINE_CONFIG=/etc/pipeline/pipeline.toml",
        "EnvironmentFile": "-/etc/pipeline/secrets.env",
        "ExecStart": "/opt/pipeline/venv/bin/pipeline poll --log-format json",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "10",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter": "@system-service",
    }
    for key, value in expected.items():
        assert value in service.get(key, []), f"[Service] {key}={value} missing (has {service.get(key)})"
    assert "PIPELINE_IMAP_PASSWORD" not in "".join(v for values in service.values() for v in values)
    assert unit_sections()["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit's keys are checked by test_unit_is_hardened)")
    # verify also checks that ExecStart exists: point it at this venv's pipeline for the check
    here = Path(sys.executable).parent / "pipeline"
    assert here.exists()
    unit = tmp_path / "pipeline.service"
    unit.write_text(UNIT.read_text().replace("/opt/pipeline/venv/bin/pipeline", str(here)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""
