"""The README's API example runs as written."""

import re
from pathlib import Path


def test_readme_python_example_runs():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_readme_main_job_commands_run(tmp_path):
    """The quick start's genoseg lines (predict with the shipped model, eval, plot) run as
    written from the repository root, with their outputs in a scratch folder."""
    import os
    import shlex
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "README.md").read_text()
    section = text[text.index("Annotate a genome (the main job)") : text.index("Commands:")]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith(".venv/bin/genoseg"):
                    commands.append(shlex.split(part))
    assert [c[1] for c in commands] == ["predict", "eval", "plot"]
    (tmp_path / "tracks").mkdir()
    (tmp_path / "data_samples").symlink_to(repo / "data_samples")
    for cmd in commands:
        r = subprocess.run(
            [sys.executable, "-m", "genoseg.cli", *cmd[1:]], cwd=tmp_path,
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)},
        )  # fmt: skip
        assert r.returncode == 0, (cmd, r.stderr[-2000:])
    assert (tmp_path / "genes.gff3").stat().st_size > 0
    assert (tmp_path / "region.png").stat().st_size > 0
    assert (tmp_path / "tracks" / "chr5.coding_plus.bedgraph").exists()
