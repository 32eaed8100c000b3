"""What the tests of every graded item assert: the master's answer passes, and each mutant fails with a hint.

A catalogue of mutants is {item: {mutant name: (answer, keyword)}}: the keyword is what the checker's message must
say, so that a learner who made that mistake reads what it was. Test modules build their parameters here and
call the two assertions, so that the rule exists once:

    @right_answers(RIGHT)
    def test_right_answers_pass(item, answer, capsys):
        assert_passes(item, answer, capsys)
"""

from __future__ import annotations

import pytest

from sdedu.grading import ExerciseFailed, check


def mutants(wrong: dict) -> list[tuple]:
    """{item: {name: (answer, keyword)}} -> [(item, name, answer, keyword), ...], in the catalogue's order."""
    return [(item, name, answer, kw) for item, by_name in wrong.items() for name, (answer, kw) in by_name.items()]


def right_answers(right: list[tuple]):
    """Parametrise a test over [(item, answer), ...], one test id per item."""
    return pytest.mark.parametrize("item, answer", right, ids=[item for item, _ in right])


def wrong_answers(catalogue: list[tuple]):
    """Parametrise a test over [(item, name, answer, keyword), ...] (see `mutants`), one id per mutant."""
    return pytest.mark.parametrize(
        "item, name, answer, keyword", catalogue, ids=[f"{item}: {name}" for item, name, _, _ in catalogue]
    )


def assert_passes(item: str, answer, capsys) -> None:
    check(item, answer)
    assert f"\u2714 {item}: passed" in capsys.readouterr().out


def assert_rejected(item: str, name: str, answer, keyword: str) -> None:
    with pytest.raises(ExerciseFailed) as info:
        check(item, answer)
    assert keyword.lower() in str(info.value).lower(), (
        f"{name}: the message does not mention {keyword!r}:\n{info.value}"
    )
