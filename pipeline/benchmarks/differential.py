"""Differential tests for the EvalPlus benchmarks: the candidate must agree with the reference on every input.

EvalPlus ships inputs (``base_input``, ``plus_input``) but no expected
outputs: the expected output of an input is what the reference solution
returns for it. The suite written here does that inside the sandboxed
program itself. Appended after the candidate's code, it runs the reference in
a namespace of its own (so neither can see the other's globals), calls both on
a fresh deep copy of each input, and compares the results:

* floats (and an int expected where a float came back) within
  ``atol`` absolute (``1e-6`` when the file gives 0) or ``1e-7`` relative
  tolerance, NaN equal only to NaN;
* lists, tuples and dicts element by element, with the same container type
  and length (or keys);
* anything else with ``==``.

The first input that disagrees raises ``AssertionError`` naming its index, so
the program fails; when every input agrees it runs to its end and passes.
The inputs travel as JSON text (as in the release files), decoded once.
"""

from __future__ import annotations

import json

#: The checking code; the four constants before it are filled in per problem and suite.
CHECKER = '''
def _sca_close(got, expected, atol):
    import math
    if isinstance(expected, float) or (isinstance(got, float) and type(expected) is int):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return False
        if math.isnan(expected):
            return math.isnan(got)
        return math.isclose(got, expected, rel_tol=1e-7, abs_tol=atol or 1e-6)
    if isinstance(expected, (list, tuple)):
        return (type(got) is type(expected) and len(got) == len(expected)
                and all(_sca_close(g, e, atol) for g, e in zip(got, expected)))
    if isinstance(expected, dict):
        return (isinstance(got, dict) and got.keys() == expected.keys()
                and all(_sca_close(got[k], expected[k], atol) for k in expected))
    return got == expected


def _sca_differential_check():
    import copy
    import json
    space = {"__name__": "reference"}
    exec(_SCA_REFERENCE, space)
    reference = space[_SCA_ENTRY]
    candidate = globals()[_SCA_ENTRY]
    for number, args in enumerate(json.loads(_SCA_INPUTS)):
        expected = reference(*copy.deepcopy(args))
        got = candidate(*copy.deepcopy(args))
        if not _sca_close(got, expected, _SCA_ATOL):
            raise AssertionError(f"input {number}: expected {expected!r:.200}, got {got!r:.200}")


_sca_differential_check()
'''


def differential_suite(reference: str, entry_point: str, inputs: list, atol: float = 0.0) -> str:
    """Test code (appended after a solution) that compares the solution with ``reference`` on ``inputs``.

    Each input is the list of positional arguments of one call.
    """
    constants = (
        f"_SCA_REFERENCE = {reference!r}\n"
        f"_SCA_ENTRY = {entry_point!r}\n"
        f"_SCA_INPUTS = {json.dumps(inputs)!r}\n"
        f"_SCA_ATOL = {float(atol)!r}\n"
    )
    return "\n" + constants + CHECKER
