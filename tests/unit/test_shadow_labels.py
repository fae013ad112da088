"""How shadow mode labels a pair of answers (the draft's against the verifier's)."""

from cascadeflow.cascade import DraftAnswer, ToolCall, label_pair


def answer(text: str = "", calls: list[tuple[str, str]] = ()) -> DraftAnswer:
    return DraftAnswer(text=text, tool_calls=[ToolCall(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)])


def test_final_answers_are_compared_after_normalisation():
    assert label_pair(answer("Reasoning… The answer is 1,024."), answer("Answer: 1024")) == (True, "final_answer")
    assert label_pair(answer("Answer: B"), answer("Answer: A")) == (False, "final_answer")


def test_tool_calls_match_on_name_and_arguments_whatever_their_key_order():
    same = label_pair(answer(calls=[("Bash", '{"a": 1, "b": 2}')]), answer(calls=[("Bash", '{"b":2,"a":1}')]))
    assert same == (True, "same_calls")
    # a different call may be as good: no rule can tell, a judge must
    assert label_pair(answer(calls=[("Bash", '{"a": 1}')]), answer(calls=[("Read", '{"a": 1}')])) == (None, None)


def test_free_form_prose_is_left_to_a_judge():
    prose = "Here is a long explanation of the design, " * 5
    assert label_pair(answer(prose), answer(prose + " And more.")) == (None, None)
