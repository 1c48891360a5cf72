"""Count the bad-input suite (tests/test_bad_inputs.py) and run it outside pytest: for each
case, did it raise the one expected error with a message that names the problem and the fix?
Run: `python benchmarks/bad_inputs.py`.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_bad_inputs import DATA_CASES, SAE_FILE_CASES, TRAINING_CASES  # noqa: E402


def run() -> dict[str, object]:
    """Each group's size, and the cases that did not raise their expected error."""
    wrong = []
    groups = {"sae_files": SAE_FILE_CASES, "training": TRAINING_CASES, "data_settings": DATA_CASES}
    for cases in groups.values():
        for name, call, error, pattern in cases:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    call(Path(tmp))
                    wrong.append(f"{name}: no error")
                except error as err:
                    if not re.search(pattern, str(err)):
                        wrong.append(f"{name}: {err}")
                except Exception as err:  # noqa: BLE001 - any other error is a wrong answer
                    wrong.append(f"{name}: {type(err).__name__}: {err}")
    counts = {group: len(cases) for group, cases in groups.items()}
    return {**counts, "total": sum(counts.values()), "wrong": wrong}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
