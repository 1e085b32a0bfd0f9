"""config.toml → typed settings; every problem is named by its key; check-config exit codes."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kioskd.config import Config, ConfigError, load_config, parse_config
from kioskd.ops.check_config import main as check_config

ROOT = Path(__file__).resolve().parent.parent


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_shipped_config_is_valid_and_documents_every_key() -> None:
    config = load_config(ROOT / "config.toml")
    assert config.backend is not None and config.agent.agent_id
    text = (ROOT / "config.toml").read_text()
    defaults = Config()
    for section in ("kiosk", "agent", "audio", "conversation", "network", "trigger", "button", "vad",
                    "leds", "control", "tools", "log", "privacy", "cues", "hours", "hooks", "state"):
        assert f"[{section}]" in text
        for key in vars(getattr(defaults, section)):
            documented = (f"\n{key} =", f"[{section}.{key}]", f"\n# {key} =")  # the last: optional keys
            assert any(form in text for form in documented), f"{section}.{key} undocumented"


def test_shipped_config_shows_the_defaults() -> None:
    data = tomllib.loads((ROOT / "config.toml").read_text())
    defaults = Config()
    for section in ("audio", "conversation", "network", "button", "vad", "leds", "control", "log", "privacy",
                    "cues", "hooks", "state"):
        for key, value in vars(getattr(defaults, section)).items():
            assert data[section][key] == value, f"{section}.{key}"


def test_minimal_config() -> None:
    config = parse_config({"agent": {"agent_id": "a1"}})
    assert config.backend is None and config.audio.input == "default" and config.trigger.mode == "button"


def test_unknown_keys_are_errors() -> None:
    assert problems({"agent": {"agent_id": "a", "sever": "x"}, "audoi": {}}) == [
        "audoi: unknown key (known: agent, audio, backend, button, control, conversation, cues, hooks, hours, kiosk,"
        " leds, log, network, privacy, screen, state, tools, trigger, vad)",
        "agent.sever: unknown key (known: agent_id, client_events, dynamic_variables, first_message, language, prompt,"
        " server, voice_id)",
    ]


def test_every_problem_is_reported_with_its_key() -> None:
    found = problems({
        "agent": {"agent_id": ""},
        "audio": {"input": "", "chunk_ms": 33},
        "button": {"mode": "press", "pin": "17"},
        "backend": {"url": "ftp://x"},
        "network": {"backoff_base": 0},
    })
    assert found == [
        "agent.agent_id: must be set to your agent's id",
        "backend.url: must be an https:// URL (http:// only on loopback), got 'ftp://x'",
        "audio.input: must be a device name, 'default' or 'wav:PATH'",
        "audio.chunk_ms: must be 10, 20, 30, 40 or 50",
        "network.backoff_base: needs 0 < backoff_base <= backoff_cap",
        "button.pin: expected an integer, got str '17'",
        "button.mode: expected one of 'toggle', 'hold', got 'press'",
    ]


def test_audio_pacing_is_one_of_three() -> None:
    assert parse_config({"agent": {"agent_id": "a"}}).audio.pacing == "auto"
    assert parse_config({"agent": {"agent_id": "a"}, "audio": {"pacing": "clock"}}).audio.pacing == "clock"
    assert problems({"agent": {"agent_id": "a"}, "audio": {"pacing": "fast"}}) == [
        "audio.pacing: expected one of 'auto', 'clock', 'device', got 'fast'"]


def test_wrong_section_type() -> None:
    assert problems({"agent": "x"}) == ["agent: expected a table, got str"]


def test_dynamic_variables_are_scalars() -> None:
    config = parse_config({"agent": {"agent_id": "a", "dynamic_variables": {"floor": 2, "open": True, "n": "x"}}})
    assert config.agent.dynamic_variables == {"floor": 2, "open": True, "n": "x"}
    assert problems({"agent": {"agent_id": "a", "dynamic_variables": {"x": [1]}}}) == [
        "agent.dynamic_variables.x: expected a string or an integer or a number or true or false, got list"]


def test_int_is_accepted_where_a_float_is_expected() -> None:
    assert (
        parse_config({"agent": {"agent_id": "a"}, "conversation": {"idle_timeout": 5}}).conversation.idle_timeout == 5.0
    )


def test_token_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIOSKD_TOKEN", raising=False)
    token = tmp_path / "token"
    backend = parse_config({"agent": {"agent_id": "a"},
                            "backend": {"url": "https://b/signed-url", "token_file": str(token)}}).backend
    assert backend is not None
    with pytest.raises(ConfigError, match=r"backend.token_file: cannot read"):
        backend.kiosk_token()
    token.write_text("")
    with pytest.raises(ConfigError, match=r"backend.token_file: .* is empty"):
        backend.kiosk_token()
    token.write_text("secret-1\n")
    assert backend.kiosk_token() == "secret-1"
    monkeypatch.setenv("KIOSKD_TOKEN", "secret-2")
    assert backend.kiosk_token() == "secret-2"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSKD_TOKEN", "t")
    ready = tmp_path / "ready.toml"
    ready.write_text((ROOT / "config.toml").read_text()
                     .replace("agent_replace_me", "agent_lobby")
                     .replace("kiosk-backend.example.org", "backend.museum.test"))
    assert check_config(["--config", str(ready)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nagent_id = "a"\n[audio]\ninput = 5\n')
    assert check_config(["--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == "audio.input: expected a string, got int 5"
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\n")
    assert check_config(["--config", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert check_config(["--config", str(tmp_path / "missing.toml")]) == 2


def test_check_config_command_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nagent_id = "a"\n[leds]\nkind = "rgb"\nred = 5\ngreen = 5\n')
    result = subprocess.run([sys.executable, "-m", "kioskd", "check-config", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "leds.red: red, green and blue must be three different pins"


def test_feedback_button_pins_are_checked() -> None:
    assert problems({"agent": {"agent_id": "a"}, "button": {"like_pin": 40}}) == [
        "button.like_pin: must be a GPIO of the header, BCM 0–27, or -1 for none",
    ]
    assert problems({"agent": {"agent_id": "a"}, "button": {"dislike_pin": 17}}) == [
        "button.dislike_pin: GPIO 17 is already used by button.pin",
    ]
    assert problems({"agent": {"agent_id": "a"}, "button": {"like_pin": 22, "dislike_pin": 22}}) == [
        "button.dislike_pin: GPIO 22 is already used by button.like_pin",
    ]
    config = parse_config({"agent": {"agent_id": "a"}, "button": {"like_pin": 22, "dislike_pin": 23}})
    assert (config.button.like_pin, config.button.dislike_pin) == (22, 23)


def test_check_config_refuses_the_shipped_placeholders(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSKD_TOKEN", "t")
    assert check_config(["--config", str(ROOT / "config.toml")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "agent.agent_id: still the placeholder 'agent_replace_me'; set your agent's id",
        "backend.url: kiosk-backend.example.org is the example placeholder; set your signing backend's URL",
    ]


def test_a_pin_used_twice_names_both_keys() -> None:
    assert problems({"agent": {"agent_id": "a"}, "button": {"pin": 17}, "leds": {"kind": "pwm", "pin": 17}}) == [
        "leds.pin: GPIO 17 is already used by button.pin"]
    assert problems({"agent": {"agent_id": "a"}, "leds": {"kind": "rgb", "red": 17, "green": 6, "blue": 13}}) == [
        "leds.red: GPIO 17 is already used by button.pin"]
    # pins not in use do not count: no button in manual mode, no LED with kind "none"
    parse_config({"agent": {"agent_id": "a"}, "trigger": {"mode": "manual"}, "leds": {"kind": "pwm", "pin": 17}})
    parse_config({"agent": {"agent_id": "a"}, "leds": {"pin": 17}})


def test_pins_outside_the_header_are_refused() -> None:
    assert problems({"agent": {"agent_id": "a"}, "button": {"pin": 28}, "leds": {"kind": "pwm", "pin": -1}}) == [
        "button.pin: must be a GPIO of the header, BCM 0–27",
        "leds.pin: must be a GPIO of the header, BCM 0–27",
    ]


def test_check_config_refuses_unreadable_and_non_wav_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_wav = tmp_path / "passwd"
    not_wav.write_text("root:x:0:0:root:/root:/bin/bash\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[agent]\nagent_id = "a"\n[audio]\ninput = "wav:{not_wav}"\n'
                      f'[cues]\nend = "{tmp_path / "missing.wav"}"\n')
    assert check_config(["--config", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"audio.input: {not_wav} is not a WAV file (")
    assert err[1] == f"cues.end: cannot read {tmp_path / 'missing.wav'}: No such file or directory"
    assert len(err) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("tok-1\nsecond line: not part of it\n", "tok-1"),
        ("\ufefftok-2\r\n", "tok-2"),
        ("  tok-3  \n\n", "tok-3"),
        (b"\xef\xbb\xbftok-4", "tok-4"),
    ],
    ids=["two-lines", "bom-crlf", "padded", "bom-bytes"],
)
def test_token_file_first_line_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | bytes,
                                    expected: str) -> None:
    monkeypatch.delenv("KIOSKD_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_bytes(content if isinstance(content, bytes) else content.encode())
    backend = parse_config(
        {"agent": {"agent_id": "a"}, "backend": {"url": "https://b/s", "token_file": str(token)}}
    ).backend
    assert backend is not None and backend.kiosk_token() == expected


@pytest.mark.parametrize(
    "content",
    ["Zq9 Wv8\n", "Zq9\tWv8\n", "Zq9\x1bWv8\n", "Zq9øWv8\n", "\n\nZq9-Wv8\n", b"\xff\xfe\x00Zq9"],
    ids=["space", "tab", "escape", "non-ascii", "empty-first-line", "not-utf8"],
)
def test_bad_token_file_is_named_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], content: str | bytes
) -> None:
    monkeypatch.delenv("KIOSKD_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_bytes(content if isinstance(content, bytes) else content.encode())
    path = tmp_path / "config.toml"
    path.write_text(f'[agent]\nagent_id = "a"\n[backend]\nurl = "https://b/s"\ntoken_file = "{token}"\n')
    assert check_config(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backend.token_file: ") and str(token) in err
    assert "Zq9" not in err and "Wv8" not in err


def test_bad_token_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSKD_TOKEN", "two words")
    backend = parse_config({"agent": {"agent_id": "a"}, "backend": {"url": "https://b/s"}}).backend
    assert backend is not None
    with pytest.raises(ConfigError, match=r"^KIOSKD_TOKEN: .*space") as info:
        backend.kiosk_token()
    assert "words" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://backend.example/signed-url", True),
        ("http://127.0.0.1:8766/signed-url", True),
        ("http://localhost:8766/signed-url", True),
        ("http://backend.example/signed-url", False),
        ("http://192.168.1.5:8766/signed-url", False),
    ],
)
def test_backend_url_is_https_except_loopback(url: str, ok: bool) -> None:
    """The kiosk token travels in every request: never in clear text over a network."""
    data = {"agent": {"agent_id": "a"}, "backend": {"url": url}}
    if ok:
        assert parse_config(data).backend is not None
    else:
        with pytest.raises(ConfigError, match=r"^backend\.url: must be an https:// URL"):
            parse_config(data)
