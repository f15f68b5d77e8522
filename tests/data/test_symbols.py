"""Symbols as file names and ids (`data.symbols`)."""

from __future__ import annotations

import pytest

from data.symbols import safe_symbol, symbol_problem


@pytest.mark.parametrize(
    ("symbol", "safe"),
    [("AAPL", "AAPL"), ("BRK.B", "BRK_B"), ("BF/B", "BF_B"), ("^GSPC", "_GSPC"),
     ("AB C", "AB_C"), ("ÄBC", "_BC"), ("0700", "0700"), ("../../etc", "_etc"),
     ("A__B", "A_B"), ("X.", "X")],
)  # fmt: skip
def test_safe_symbol_is_one_path_part(symbol: str, safe: str) -> None:
    assert safe_symbol(symbol) == safe
    assert "/" not in safe and safe not in (".", "..") and "__" not in safe


@pytest.mark.parametrize("symbol", ["///", "..", "ÄÖ", "-"])
def test_a_symbol_without_letters_or_digits_cannot_name_files(symbol: str) -> None:
    with pytest.raises(ValueError, match="no ASCII letter or digit"):
        safe_symbol(symbol)
    assert "no ASCII letter or digit" in symbol_problem(symbol)


def test_symbol_problem_names_what_is_wrong() -> None:
    assert symbol_problem("BRK.B") is None and symbol_problem("AB C") is None
    assert "non-empty text" in symbol_problem("")
    assert "this is an int" in symbol_problem(7) and "quote" in symbol_problem(True)
    assert "this is a float" in symbol_problem(7.5) and "octal 448" in symbol_problem(448)
    assert "longer than 32" in symbol_problem("A" * 33)
    assert "control characters" in symbol_problem("A\nB")
    assert "leading/trailing" in symbol_problem("AAPL ")


def test_yaml_symbols_read_as_numbers_or_booleans_are_refused_with_the_quoting_fix() -> None:
    """YAML 1.1 reads an unquoted 0700 as octal 448 and ON as true: the spec says to quote
    them rather than train a symbol named 448 or fail on 'True'."""
    from ray_jobs.spec import JobSpec, SpecError

    text = ("name: quoting\n"
            "dataset: {uri: 'sample:sp500', symbols: [0700, ON, AAPL]}\n"
            "models: [ols]\n")
    with pytest.raises(SpecError) as info:
        JobSpec.from_yaml(text)
    fields = dict(info.value.errors)
    assert set(fields) == {"dataset.symbols[0]", "dataset.symbols[1]"}, fields
    assert "448" in fields["dataset.symbols[0]"] and "quote" in fields["dataset.symbols[0]"]
    assert "'0700'" in fields["dataset.symbols[1]"]
    assert JobSpec.from_yaml(text.replace("0700, ON", "'0700', 'ON'")).dataset.symbols == (
        "0700", "ON", "AAPL")
