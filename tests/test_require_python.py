"""envs/require_python.py, the first command of every README set-up block: Python 3.11 or newer, else a message."""

import ast
import importlib.util
import re
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "envs/require_python.py"
spec = importlib.util.spec_from_file_location("require_python", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_old_pythons_get_a_message_that_names_the_version_and_the_way_out():
    for old in [(3, 6, 8), (3, 9, 18), (3, 10, 14), (2, 7, 18)]:
        message = check.problem(old)
        assert f"is Python {old[0]}.{old[1]}." in message and "needs Python 3.11 or newer" in message
        assert "module load python/3.11" in message


def test_supported_pythons_pass():
    assert check.problem((3, 11, 0)) is None and check.problem((3, 13, 1)) is None


def test_the_script_exits_zero_here_and_every_readme_set_up_runs_it_first():
    assert subprocess.run([sys.executable, str(SCRIPT)], timeout=30).returncode == 0
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    venv_blocks = [block for block in blocks if "-m venv" in block]
    assert len(venv_blocks) >= 4  # demo, tests, GPU, the cluster's two
    assert all(block.startswith("python3 envs/require_python.py && python3") for block in venv_blocks)


def test_the_script_parses_as_python_3_6():
    # the check must reach a cluster's old default python3 and print its message, not a SyntaxError
    ast.parse(SCRIPT.read_text(), feature_version=(3, 6))
