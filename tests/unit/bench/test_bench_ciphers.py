"""`enclave bench --cipher LIST`: the list, `all`, duplicates, and names the agent does not know
or this machine cannot run (clear errors naming the supported ones)."""

from __future__ import annotations

import pytest

from enclave.bench.command import parse_ciphers, supported_ciphers
from enclave.cipher import CIPHER_NAMES
from enclave.cli import main

BOTH = ["aes256gcm", "chacha20poly1305"]


def test_all_and_both_mean_every_supported_cipher() -> None:
    assert parse_ciphers("all", BOTH) == BOTH
    assert parse_ciphers("ALL", ["chacha20poly1305"]) == ["chacha20poly1305"]
    assert parse_ciphers("both", BOTH) == BOTH  # the option's older spelling
    assert parse_ciphers(None, BOTH) == BOTH


def test_list_keeps_order_and_drops_duplicates() -> None:
    assert parse_ciphers("chacha20poly1305,aes256gcm", BOTH) == ["chacha20poly1305", "aes256gcm"]
    assert parse_ciphers("aes256gcm, aes256gcm,chacha20poly1305,aes256gcm", BOTH) == BOTH
    assert parse_ciphers("aes256gcm,", BOTH) == ["aes256gcm"]


def test_unknown_name_is_a_clear_error_naming_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"'blowfish' is not a cipher this agent knows; "
                                         r"supported here: aes256gcm, chacha20poly1305"):
        parse_ciphers("aes256gcm,blowfish", BOTH)


def test_known_cipher_this_machine_cannot_run() -> None:
    with pytest.raises(ValueError, match=r"'aes256gcm' is not available on this machine; "
                                         r"supported here: chacha20poly1305"):
        parse_ciphers("aes256gcm", ["chacha20poly1305"])


def test_aegis256_only_where_the_agent_supports_it() -> None:
    have = supported_ciphers()
    if "aegis256" in have:
        assert parse_ciphers("aegis256", have) == ["aegis256"]
    else:
        with pytest.raises(ValueError, match="aegis256.*supported here: " + ", ".join(have)):
            parse_ciphers("aes256gcm,aegis256,chacha20poly1305", have)


@pytest.mark.parametrize("text", ["", ",", " , ", "aes256gcm,all"])
def test_empty_or_mixed_all_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--cipher"):
        parse_ciphers(text, BOTH)


def test_supported_ciphers_are_agent_cipher_names_in_their_order() -> None:
    have = supported_ciphers()
    assert have and set(have) <= set(CIPHER_NAMES)
    assert have == [c for c in CIPHER_NAMES if c in have]
    assert "chacha20poly1305" in have  # needs no CPU feature


@pytest.mark.parametrize("argv, message", [
    (["bench", "--cipher", "aes256gcm,blowfish"], "'blowfish' is not a cipher this agent knows"),
    (["bench", "--repeat", "0"], "--repeat must be 1..50"),
    (["bench", "gateway", "--cipher", "rot13"], "'rot13' is not a cipher this agent knows"),
    (["bench", "crypto", "--cipher", ","], "no cipher given"),
])
def test_bad_options_exit_2_before_anything_runs(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "supported here" in err or "--repeat" in err
