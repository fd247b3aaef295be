"""Steps the deployments' `pull` section runs on the worker, at run time.

`prefect deploy` resolves `{{ $PWD }}` when it deploys, so a pull step naming it fixes the
deployer's directory into every deployment: a worker at another path, or on another host, fails.
This step finds the project where the worker has it: CANGFLOW_PROJECT_DIR when set, else the
folder holding the installed `flows` package (the project itself for `uv sync`'s editable
install, site-packages for a wheel: both hold flows/, tasks/ and warehouse/ side by side).
"""

from __future__ import annotations

import os
from pathlib import Path


def set_project_directory(directory: str | None = None) -> dict[str, str]:
    """Change into the project (see the module docstring); the flow's entrypoint, e.g.
    flows/nightly.py:nightly_flow, is then found relative to it."""
    import flows

    target = Path(
        directory
        or os.environ.get("CANGFLOW_PROJECT_DIR")
        or Path(flows.__file__).resolve().parents[1]
    )
    if not (target / "flows" / "nightly.py").is_file():
        raise FileNotFoundError(
            f"{target} does not hold cangflow's flows/ (set CANGFLOW_PROJECT_DIR on the worker)"
        )
    os.chdir(target)
    return {"directory": str(target)}
